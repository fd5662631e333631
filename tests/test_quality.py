"""Embedding quality on real labelled data, against the established tools on the same data.

10-NN label accuracy = mean 5-fold CV accuracy of a 10-NN classifier on the 2-D embedding.
Targets (issue 2): UMAP >= umap-learn - 0.02; TSNE >= openTSNE - 0.02; InfoTSNE and LargeVis
within 0.03 of the better of the two peers; TSNEkhorn >= 0.90 on digits. Issue 26: InfoTSNE
with TorchDR's documented defaults (300 negatives, t-SNE's exaggeration schedule) within 0.01
of openTSNE on digits, mean over two seeds of both.
"""

import numpy as np
import pytest
import torch

import torchdr_sc as tdr
from torchdr_sc.quality import knn_label_accuracy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def peers(request):
    """Peer accuracies per dataset, computed once."""
    return {}


def _peer_umap(x, labels):
    umap = pytest.importorskip("umap")
    z = umap.UMAP(random_state=0, n_jobs=1).fit_transform(x)
    return knn_label_accuracy(z, labels)


def _opentsne_embedding(peers, dataset, x):
    key = (dataset, "opentsne-embedding")
    if key not in peers:
        opentsne = pytest.importorskip("openTSNE")
        peers[key] = np.asarray(opentsne.TSNE(random_state=0, n_jobs=2).fit(x))
    return peers[key]


def _peer(peers, dataset, name, data):
    key = (dataset, name)
    if key not in peers:
        if name == "umap":
            peers[key] = _peer_umap(*data)
        else:
            peers[key] = knn_label_accuracy(_opentsne_embedding(peers, dataset, data[0]), data[1])
    return peers[key]


@pytest.fixture(params=["digits", "pbmc"])
def dataset(request):
    return request.param, request.getfixturevalue(request.param)


def test_umap_quality(dataset, peers):
    name, (x, labels) = dataset
    ours = knn_label_accuracy(tdr.UMAP(random_state=0).fit_transform(x), labels)
    ref = _peer(peers, name, "umap", (x, labels))
    print(f"{name}: UMAP {ours:.4f} vs umap-learn {ref:.4f}")
    assert ours >= ref - 0.02


def test_tsne_quality(dataset, peers):
    name, (x, labels) = dataset
    ours = knn_label_accuracy(tdr.TSNE(random_state=0).fit_transform(x), labels)
    ref = _peer(peers, name, "opentsne", (x, labels))
    print(f"{name}: TSNE {ours:.4f} vs openTSNE {ref:.4f}")
    assert ours >= ref - 0.02


def test_tsne_fft_quality_and_kl(dataset, peers):
    """t-SNE with the FFT-interpolated repulsion: accuracy and KL(P || Q) against openTSNE.

    Both KL divergences are evaluated exactly with the same P (ours) and the same formula.
    """
    from torchdr_sc.objective.exact import tsne_kl

    name, (x, labels) = dataset
    est = tdr.TSNE(random_state=0, repulsion="fft")
    z = est.fit_transform(x)
    assert est.repulsion_used_ == "fft"
    ours = knn_label_accuracy(z, labels)
    ref = _peer(peers, name, "opentsne", (x, labels))
    P = est.affinity_in_.scaled(1.0 / float(est.affinity_in_.weights.sum())).to(dtype=torch.float64)
    kl_ours = float(tsne_kl(torch.as_tensor(z, dtype=torch.float64), P))
    z_ref = torch.as_tensor(_opentsne_embedding(peers, name, x), dtype=torch.float64)
    kl_ref = float(tsne_kl(z_ref, P))
    print(f"{name}: TSNE fft {ours:.4f} (KL {kl_ours:.3f}) vs openTSNE {ref:.4f} (KL {kl_ref:.3f})")
    assert ours >= ref - 0.01
    assert kl_ours <= 1.05 * kl_ref


@pytest.mark.parametrize("method", ["InfoTSNE", "LargeVis"])
def test_sampled_methods_quality(dataset, peers, method):
    name, (x, labels) = dataset
    ours = knn_label_accuracy(getattr(tdr, method)(random_state=0).fit_transform(x), labels)
    ref = max(_peer(peers, name, "umap", (x, labels)), _peer(peers, name, "opentsne", (x, labels)))
    print(f"{name}: {method} {ours:.4f} vs best peer {ref:.4f}")
    assert ours >= ref - 0.03
    if method == "InfoTSNE":  # the t-SNE issue's target: openTSNE - 0.02 on both datasets
        assert ours >= _peer(peers, name, "opentsne", (x, labels)) - 0.02


def test_infotsne_within_001_of_opentsne_on_digits(digits):
    """InfoNC-t-SNE at TorchDR's defaults reaches t-SNE's 10-NN accuracy (issue 26): the
    per-edge scheme with 5 negatives and no exaggeration it replaced did not."""
    opentsne = pytest.importorskip("openTSNE")
    x, labels = digits
    ours, theirs = [], []
    for seed in (0, 1):
        ours.append(knn_label_accuracy(tdr.InfoTSNE(random_state=seed).fit_transform(x), labels))
        z = np.asarray(opentsne.TSNE(n_jobs=2, random_state=seed).fit(x))
        theirs.append(knn_label_accuracy(z, labels))
    print(f"digits: InfoTSNE {np.mean(ours):.4f} vs openTSNE {np.mean(theirs):.4f}")
    assert np.mean(ours) >= np.mean(theirs) - 0.01


def test_tsnekhorn_and_sne_on_digits(digits):
    x, labels = digits
    khorn = knn_label_accuracy(tdr.TSNEkhorn(random_state=0).fit_transform(x), labels)
    sne = knn_label_accuracy(tdr.SNE(random_state=0).fit_transform(x), labels)
    print(f"digits: TSNEkhorn {khorn:.4f}, SNE {sne:.4f}")
    assert khorn >= 0.90
    assert sne >= 0.80


@pytest.mark.parametrize(
    ("method", "peer"), [("UMAP", "umap"), ("InfoTSNE", "best"), ("LargeVis", "best")]
)
def test_compiled_epoch_quality(digits, peers, method, peer):
    """The fused (torch.compile) epoch, which 'auto' uses on large data, on real data."""
    x, labels = digits
    ours = knn_label_accuracy(
        getattr(tdr, method)(random_state=0, compile=True).fit_transform(x), labels
    )
    umap_ref = _peer(peers, "digits", "umap", (x, labels))
    if peer == "umap":
        ref, tol = umap_ref, 0.02
    else:
        ref, tol = max(umap_ref, _peer(peers, "digits", "opentsne", (x, labels))), 0.03
    print(f"digits: compiled {method} {ours:.4f} vs peer {ref:.4f}")
    assert ours >= ref - tol
