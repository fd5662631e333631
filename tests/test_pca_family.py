"""The PCA estimators: ``PCA``, ``ExactIncrementalPCA``, ``IncrementalPCA``.

Against scikit-learn on dense, sparse and on-disk input; bitwise the same axes for 1 and 2
threads; 2 gloo processes (``torch.multiprocessing.spawn``) against 1 process.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.decomposition import PCA as SkPCA
from sklearn.decomposition import IncrementalPCA as SkIncrementalPCA
from sklearn.decomposition import TruncatedSVD

import torchdr_sc as tdr
from torchdr_sc._device import cpu_threads
from torchdr_sc.streaming import Chunked


def sine_of_largest_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Sine of the largest principal angle between the row spaces of ``a`` and ``b``."""
    qa = np.linalg.qr(np.asarray(a, np.float64).T)[0]
    qb = np.linalg.qr(np.asarray(b, np.float64).T)[0]
    return float(np.linalg.norm(qa @ qa.T - qb @ qb.T, 2))


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(400, 6))
    rates = np.exp(0.4 * latent @ rng.normal(size=(6, 60)) / 2)
    return np.log1p(rng.poisson(rates)).astype(np.float32)


@pytest.mark.parametrize("kind", ["dense", "sparse", "tensor", "chunked"])
def test_pca_matches_sklearn_on_every_input(counts, kind):
    inputs = {
        "dense": counts,
        "sparse": sp.csr_matrix(counts),
        "tensor": torch.from_numpy(counts),
        "chunked": Chunked(counts, chunk_rows=37),
    }
    ref = SkPCA(5, svd_solver="full").fit(counts)
    ours = tdr.PCA(5).fit(inputs[kind])
    assert ours.mean_.shape == (1, counts.shape[1])
    assert sine_of_largest_angle(ours.components_, ref.components_) < 1e-4
    np.testing.assert_allclose(
        ours.explained_variance_ratio_, ref.explained_variance_ratio_, atol=1e-6
    )
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-4)
    z = ours.transform(inputs[kind])
    assert isinstance(z, torch.Tensor if kind == "tensor" else np.ndarray)
    np.testing.assert_allclose(np.abs(np.asarray(z)), np.abs(ref.transform(counts)), atol=1e-3)


def test_randomized_solver_and_uncentred_pca(counts):
    # subspace iteration converges as (lambda_15 / lambda_4)^7, about 0.5^7 on these data
    ref = SkPCA(4, svd_solver="full").fit(counts)
    fast = tdr.PCA(4, svd_solver="randomized", random_state=0).fit(sp.csr_matrix(counts))
    assert sine_of_largest_angle(fast.components_, ref.components_) < 0.02
    np.testing.assert_allclose(
        fast.explained_variance_ratio_, ref.explained_variance_ratio_, atol=1e-5
    )
    tsvd = TruncatedSVD(5, algorithm="arpack").fit(counts)
    plain = tdr.PCA(5, zero_center=False).fit(counts)
    assert sine_of_largest_angle(plain.components_, tsvd.components_) < 1e-4
    np.testing.assert_allclose(
        plain.explained_variance_ratio_, tsvd.explained_variance_ratio_, atol=1e-6
    )
    assert float(plain.mean_.abs().max()) == 0.0


def test_inverse_transform_with_every_component(counts):
    pca = tdr.PCA(counts.shape[1])
    z = pca.fit_transform(counts.astype(np.float64))
    np.testing.assert_allclose(pca.inverse_transform(z), counts, atol=1e-8)


def test_same_axes_bitwise_for_one_and_two_threads(counts):
    x = np.repeat(counts, 30, axis=0)  # enough rows for several blocks and parallel kernels
    out = {}
    for threads in (1, 2):
        with cpu_threads(threads):
            est = tdr.PCA(8).fit(sp.csr_matrix(x))
            out[threads] = (est.components_, est.explained_variance_, est.transform(x[:50]))
    assert all(
        torch.equal(torch.as_tensor(a), torch.as_tensor(b))
        for a, b in zip(*out.values(), strict=False)
    )


def test_exact_incremental_pca_is_the_pca_whatever_the_batches(counts):
    ref = tdr.PCA(4).fit(counts.astype(np.float64))
    batched = tdr.ExactIncrementalPCA(4)
    for s in range(0, 400, 97):
        batched.partial_fit(counts[s : s + 97].astype(np.float64))
    assert batched.mean_.shape == (counts.shape[1],)
    assert batched.n_samples_seen_ == 400
    torch.testing.assert_close(batched.components_, ref.components_, rtol=0, atol=1e-10)
    two_pass = tdr.ExactIncrementalPCA(4).compute_mean([counts[:150], counts[150:]])
    two_pass.fit([counts[:150], counts[150:]])
    torch.testing.assert_close(two_pass.components_, tdr.PCA(4).fit(counts).components_)
    torch.testing.assert_close(
        batched.explained_variance_, ref.explained_variance_, rtol=1e-10, atol=0
    )


def test_incremental_pca_matches_sklearn(counts):
    ref = SkIncrementalPCA(5, batch_size=80).fit(counts.astype(np.float64))
    ours = tdr.IncrementalPCA(5, batch_size=80).fit(counts.astype(np.float64))
    np.testing.assert_allclose(ours.components_, ref.components_, atol=1e-8)
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_)
    np.testing.assert_allclose(ours.noise_variance_, ref.noise_variance_)


def test_parameter_and_input_errors(counts):
    with pytest.raises(ValueError, match=r"`n_components` \(61\) must be at most n_features"):
        tdr.PCA(61).fit(counts)
    with pytest.raises(ValueError, match="`distributed` must be one of 'auto', False, True"):
        tdr.PCA(2, distributed="yes").fit(counts)
    with pytest.raises(ValueError, match="`svd_solver` must be one of 'auto', 'covariance_eigh'"):
        tdr.PCA(2, svd_solver="arpack").fit(counts)
    bad = counts.copy()
    bad[[3, 9], 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf values in 2 of 400 rows"):
        tdr.PCA(2).fit(sp.csr_matrix(bad))
    with pytest.raises(ValueError, match="NaN or inf values in 2 of 400 rows"):
        tdr.ExactIncrementalPCA(2).fit(bad)
    with pytest.raises(ValueError, match="not fitted yet"):
        tdr.PCA(2).transform(counts)
    with pytest.raises(TypeError, match="fit_transform needs a matrix"):
        tdr.ExactIncrementalPCA(2).fit_transform(iter([counts]))
    with pytest.raises(RuntimeError, match=r"needs an initialised torch\.distributed"):
        tdr.PCA(2, distributed=True).fit(counts)


def _rank_worker(rank: int, world: int, init: str, out: str, x: np.ndarray) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
        pca = tdr.PCA(4).fit(x[shard])
        exact = tdr.ExactIncrementalPCA(4).fit(x[shard])
        fast = tdr.PCA(4, svd_solver="randomized", random_state=3).fit(sp.csr_matrix(x[shard]))
        coords = tdr.pp.pca(x, n_comps=4)
        np.savez(
            f"{out}/rank{rank}.npz",
            pca=pca.components_.numpy(),
            exact=exact.components_.numpy(),
            fast=fast.components_.numpy(),
            mean=exact.mean_.numpy(),
            n=exact.n_samples_seen_,
            coords=coords,
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(counts, tmp_path_factory):
    out = tmp_path_factory.mktemp("pca_gloo")
    x = counts[:399].astype(np.float64)  # odd: shards of 199 and 200 rows
    mp.spawn(_rank_worker, args=(2, f"file://{out}/store", str(out), x), nprocs=2, join=True)
    return x, [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]


def test_two_gloo_processes_give_the_one_process_components(two_ranks):
    x, ranks = two_ranks
    alone = {
        "pca": tdr.PCA(4, distributed=False).fit(x).components_.numpy(),
        "exact": tdr.ExactIncrementalPCA(4, distributed=False).fit(x).components_.numpy(),
        "fast": tdr.PCA(4, svd_solver="randomized", random_state=3, distributed=False)
        .fit(sp.csr_matrix(x))
        .components_.numpy(),
    }
    for name, ref in alone.items():
        np.testing.assert_allclose(ranks[0][name], ref, atol=1e-10)
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name])  # broadcast: same bits
    assert int(ranks[0]["n"]) == 399
    np.testing.assert_allclose(ranks[0]["mean"], x.mean(0), atol=1e-12)
    one = tdr.pp.pca(x, n_comps=4, distributed=False)
    np.testing.assert_allclose(ranks[0]["coords"], one, atol=1e-5)
    np.testing.assert_array_equal(ranks[0]["coords"], ranks[1]["coords"])
