"""sklearn semantics, determinism, formats and bad input of the estimators."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone

import torchdr_sc as tdr

FAST = {"max_iter": 60}
ESTIMATORS = [
    lambda: tdr.UMAP(n_neighbors=10, **FAST),
    lambda: tdr.TSNE(perplexity=10, early_exaggeration_iter=20, **FAST),
    lambda: tdr.InfoTSNE(perplexity=10, **FAST),
    lambda: tdr.LargeVis(perplexity=10, **FAST),
    lambda: tdr.SNE(perplexity=10, early_exaggeration_iter=20, **FAST),
    lambda: tdr.TSNEkhorn(perplexity=10, early_exaggeration_iter=20, **FAST),
]
IDS = ["UMAP", "TSNE", "InfoTSNE", "LargeVis", "SNE", "TSNEkhorn"]


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_same_seed_same_embedding_and_clone(make, blobs):
    x, _ = blobs
    # bitwise reproducibility is a CPU guarantee: CUDA's atomic float additions (the
    # gradient scatter) sum in a varying order, so GPU runs agree only statistically
    est = make().set_params(random_state=3, device="cpu")
    a = est.fit_transform(x)
    b = clone(est).fit_transform(x)
    assert a.dtype == np.float32
    assert a.shape == (x.shape[0], 2)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert clone(est).get_params() == est.get_params()
    assert set(est.timings_) >= {"knn", "affinity", "optimize"}


@pytest.mark.parametrize("make", ESTIMATORS[:2], ids=IDS[:2])
def test_torch_in_torch_out(make, blobs):
    x, _ = blobs
    est = make().set_params(random_state=0, device="cpu")  # numpy would go to CUDA
    z_np = est.fit_transform(x)
    xt = torch.from_numpy(x)
    z_t = clone(est).fit_transform(xt)
    assert isinstance(z_t, torch.Tensor)
    assert z_t.device == xt.device
    assert not z_t.requires_grad
    np.testing.assert_allclose(z_t.numpy(), z_np, rtol=1e-5, atol=1e-5)


def test_float64_stays_float64(blobs):
    x, _ = blobs
    z = tdr.TSNE(perplexity=10, max_iter=30, random_state=0).fit_transform(x.astype(np.float64))
    assert z.dtype == np.float64


def test_integer_and_float16_input_upcast(blobs):
    x, _ = blobs
    z = tdr.UMAP(n_neighbors=10, max_iter=20, random_state=0).fit_transform(
        np.round(x * 10).astype(np.int32)
    )
    assert z.dtype == np.float32
    zt = tdr.UMAP(n_neighbors=10, max_iter=20, random_state=0).fit_transform(
        torch.from_numpy(x).half()
    )
    assert zt.dtype == torch.float32


def test_affinity_reuse_skips_computation(blobs):
    x, _ = blobs
    est = tdr.UMAP(n_neighbors=10, max_iter=30, random_state=0, device="cpu")
    a = est.fit_transform(x)
    P = est.affinity_in_
    b = clone(est).fit_transform(x, affinity=P)
    np.testing.assert_array_equal(a, b)
    P2 = tdr.SparseAffinity.from_scipy(P.to_scipy())
    c = clone(est).fit_transform(x, affinity=P2)
    np.testing.assert_allclose(a, c, atol=1e-5)


def test_large_searched_graph_is_freed_and_tsne_p_is_compact(blobs, monkeypatch):
    from torchdr_sc.estimators import _base

    x, _ = blobs
    kept = tdr.TSNE(perplexity=10, max_iter=30, early_exaggeration_iter=10, random_state=0).fit(x)
    assert kept.knn_ is not None
    assert kept.knn_.k == 30
    P = kept.affinity_in_
    assert P.rows.dtype == P.cols.dtype == torch.int32  # 12 bytes per edge
    dense = P.to_dense()
    torch.testing.assert_close(dense, dense.T)  # (P + P^T) / 2
    monkeypatch.setattr(_base, "KEEP_KNN_MAX_BYTES", 1000)
    freed = tdr.TSNE(perplexity=10, max_iter=30, early_exaggeration_iter=10, random_state=0).fit(x)
    assert freed.knn_ is None
    np.testing.assert_array_equal(freed.embedding_.numpy(), kept.embedding_.numpy())
    given = tdr.TSNE(perplexity=10, max_iter=30, early_exaggeration_iter=10, random_state=0)
    given.fit_transform(x, knn=kept.knn_)
    assert given.knn_ is not None  # a graph passed in is the caller's: kept


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"perplexity": -1}, r"`perplexity` must be a float in \(0, inf\); got -1"),
        (
            {"backend": "foo"},
            r"`backend` must be one of 'auto', 'faiss', 'keops', 'torch', None; got 'foo'",
        ),
        ({"metric_in": "minkowski"}, r"`metric_in` must be one of"),
        ({"n_components": 0}, r"`n_components` must be an int in \[1, inf\)"),
        ({"optimizer": "Nope"}, r"`optimizer` must be one of .*'Adam'.*'SGD'"),
        ({"init": "magic"}, r"`init` must be one of 'normal', 'pca', 'random', 'spectral'"),
        ({"distributed": "yes"}, r"`distributed` must be one of"),
    ],
)
def test_bad_parameters(params, match, blobs):
    with pytest.raises((ValueError, TypeError), match=match):
        tdr.TSNE(**params).fit_transform(blobs[0])


def test_bad_umap_parameters(blobs):
    with pytest.raises(ValueError, match=r"`n_neighbors` must be an int in \[2, inf\)"):
        tdr.UMAP(n_neighbors=1).fit_transform(blobs[0])
    with pytest.raises(ValueError, match=r"`n_negatives` must be an int"):
        tdr.UMAP(n_negatives=0).fit_transform(blobs[0])


def test_bad_data():
    x = np.random.default_rng(0).normal(size=(50, 5)).astype(np.float32)
    bad = x.copy()
    bad[3, 1] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf values in 2 of 50 rows"):
        tdr.UMAP().fit_transform(bad)
    with pytest.raises(
        ValueError, match=r"perplexity \(30\) must be smaller than the number of samples \(20\)"
    ):
        tdr.TSNE().fit_transform(x[:20])
    with pytest.raises(
        ValueError, match=r"n_neighbors \(15\) must not exceed the number of samples \(10\)"
    ):
        tdr.UMAP().fit_transform(x[:10])
    with pytest.raises(ValueError, match=r"At least 2 samples"):
        tdr.UMAP(n_neighbors=2).fit_transform(x[:1])
    with pytest.raises(TypeError, match=r"scipy sparse matrix.*sc.pp.pca"):
        tdr.UMAP().fit_transform(sp.csr_matrix(x))
    with pytest.raises(
        ValueError,
        match=r"`init` array must have shape \(n_samples, n_components\) = \(50, 2\); got \(50, 3\)",
    ):
        tdr.UMAP(init=np.zeros((50, 3))).fit_transform(x)
    with pytest.raises(ValueError, match=r"must be 2-D"):
        tdr.UMAP().fit_transform(x[0])


def test_distributed_true_without_group_is_an_error(blobs):
    with pytest.raises(RuntimeError, match=r"torchrun --nproc_per_node"):
        tdr.UMAP(distributed=True).fit_transform(blobs[0])


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_degenerate_data_gives_finite_embedding(make):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    x[:, 2] = 5.0  # constant column
    x[10:20] = x[0]  # exact duplicates
    z = make().set_params(random_state=0).fit_transform(x)
    assert np.isfinite(z).all()
    same = np.ones((40, 3), np.float32)  # all-identical points
    z = make().set_params(random_state=0).fit_transform(same)
    assert np.isfinite(z).all()


def test_init_array_is_used(blobs):
    x, _ = blobs
    init = np.random.default_rng(0).normal(size=(x.shape[0], 2)).astype(np.float32)
    est = tdr.UMAP(n_neighbors=10, init=init, max_iter=1, lr=1e-12)
    z = est.fit_transform(x)
    np.testing.assert_allclose(z, init, atol=1e-5)


def test_pca_estimator_matches_sklearn(blobs):
    from sklearn.decomposition import PCA as SkPCA

    x, _ = blobs
    ours = tdr.PCA(n_components=3).fit_transform(x)
    ref = SkPCA(n_components=3).fit_transform(x)
    np.testing.assert_allclose(np.abs(ours), np.abs(ref), rtol=1e-3, atol=1e-3)


def test_spectral_init_solvers_agree(digits):
    """LOBPCG (the CUDA default) spans the same eigenvectors as ARPACK (the CPU default)."""
    from torchdr_sc.initialization import spectral_embedding

    P = tdr.UMAPAffinity(n_neighbors=15)(torch.from_numpy(digits[0]))
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    ref = spectral_embedding(P, 2, gen(), solver="arpack")
    ours = spectral_embedding(P, 2, gen(), solver="lobpcg")
    assert torch.equal(spectral_embedding(P, 2, gen()), ref)  # 'auto' on CPU is ARPACK
    qa, _ = torch.linalg.qr(ref.double())
    qb, _ = torch.linalg.qr(ours.double())
    cosines = torch.linalg.svdvals(qa.T @ qb)  # of the principal angles between the spans
    assert cosines.min() > 0.999
