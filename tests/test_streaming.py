"""Streamed input: DataLoader and on-disk (backed AnnData) matrices read chunk by chunk."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import torchdr_sc as tdr
import torchdr_sc.streaming as streaming
from torchdr_sc.initialization import pca_components, sign_by_largest_entry
from torchdr_sc.knn import knn
from torchdr_sc.objective.exact import RowShard
from torchdr_sc.quality import knn_label_accuracy
from torchdr_sc.streaming import Chunked, IncrementalPCA, is_streamed, streamed_knn


class SpyArray:
    """A row-sliceable matrix that records the largest slice read at once."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.shape, self.largest, self.reads = x, x.shape, 0, 0

    def __getitem__(self, key: slice) -> np.ndarray:
        rows = len(range(*key.indices(self.shape[0])))
        self.largest = max(self.largest, rows)
        self.reads += 1
        return self.x[key]


@pytest.fixture(scope="module")
def digits_data():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target


@pytest.fixture(scope="module")
def gauss():
    """(600, 12) Gaussian data without ties, far from the origin."""
    rng = np.random.default_rng(3)
    return (rng.normal(size=(600, 12)) + 50.0).astype(np.float32)


def loader_of(x: np.ndarray, batch_size: int = 128, **kwargs) -> DataLoader:
    return DataLoader(TensorDataset(torch.from_numpy(x)), batch_size=batch_size, **kwargs)


@pytest.fixture(scope="module")
def in_memory_umap(digits_data):
    X, y = digits_data
    z = tdr.UMAP(random_state=0, init="pca", max_iter=200, device="cpu").fit_transform(X)
    return knn_label_accuracy(z, y)


# ---- kNN and PCA of streamed rows ----------------------------------------------------
@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "cosine", "manhattan"])
def test_streamed_knn_matches_exact_search(gauss, backend, metric):
    if backend == "faiss":
        pytest.importorskip("faiss")
    # far from the origin, cosine distances are all ~1e-4 apart: take centred data for it
    x = gauss - 50.0 if metric == "cosine" else gauss
    exact = knn(torch.from_numpy(x), 10, backend="torch", metric=metric)
    res = streamed_knn(loader_of(x, 97), 10, backend=backend, metric=metric)
    assert res.backend == backend
    assert res.passes == 2
    np.testing.assert_array_equal(res.indices.numpy(), exact.indices.numpy())
    np.testing.assert_allclose(res.distances.numpy(), exact.distances.numpy(), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_streamed_knn_of_a_shard(gauss, backend):
    exact = knn(torch.from_numpy(gauss), 7, backend="torch")
    res = streamed_knn(Chunked(gauss, 50), 7, backend=backend, shard=RowShard(130, 421))
    assert res.indices.shape == (291, 7)
    np.testing.assert_array_equal(res.indices.numpy(), exact.indices[130:421].numpy())


def test_exact_torch_search_in_several_passes(gauss, monkeypatch):
    monkeypatch.setattr(
        streaming._constants, "QUERY_BYTES", 2 * 100 * 12 * 4
    )  # query blocks of 100 rows
    exact = knn(torch.from_numpy(gauss), 5, backend="torch")
    res = streamed_knn(loader_of(gauss, 64), 5, backend="torch")
    assert res.passes == 1 + 6
    np.testing.assert_array_equal(res.indices.numpy(), exact.indices.numpy())


def test_faiss_ivf_index_trained_on_the_first_chunks(monkeypatch):
    pytest.importorskip("faiss")
    import torchdr_sc.knn.faiss_search as kf

    monkeypatch.setattr(kf, "FLAT_MAX_SAMPLES", 500)
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4.0, size=(20, 16))
    x = (centers[rng.integers(0, 20, 4000)] + rng.normal(size=(4000, 16))).astype(np.float32)
    exact = knn(torch.from_numpy(x), 15, backend="torch")
    res = streamed_knn(Chunked(x, 700), 15, backend="faiss")
    recall = np.mean(
        [
            len(set(a) & set(b)) / 15
            for a, b in zip(res.indices.numpy(), exact.indices.numpy(), strict=True)
        ]
    )
    assert recall >= 0.95


def test_no_row_is_its_own_neighbour_with_duplicates():
    x = np.repeat(np.arange(30, dtype=np.float32)[:, None], 4, axis=0)  # every row 4 times
    for backend in ("faiss", "torch"):
        res = streamed_knn(Chunked(x, 16), 5, backend=backend)
        rows = np.arange(x.shape[0])[:, None]
        assert not (res.indices.numpy() == rows).any()
        assert (res.distances.numpy()[:, :3] == 0).all()


def test_incremental_pca_equals_pca_of_all_rows():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(500, 9)) * np.arange(1, 10) + 7.0)
    pca = IncrementalPCA(3)
    for s in range(0, 500, 64):
        pca.partial_fit(x[s : s + 64])
    pca.finalize()
    xc = x - x.mean(0)
    evals, evecs = torch.linalg.eigh(xc.T @ xc / 499)
    np.testing.assert_allclose(pca.mean_.numpy(), x.mean(0).numpy(), rtol=1e-10)
    np.testing.assert_allclose(
        pca.explained_variance_.numpy(), evals.flip(0)[:3].numpy(), rtol=1e-8
    )
    cos = (pca.components_ @ evecs.flip(1)[:, :3]).diagonal().abs()
    np.testing.assert_allclose(cos.numpy(), 1.0, rtol=1e-8)


def test_streamed_pca_init_equals_in_memory_pca(digits_data):
    X, _ = digits_data
    res = streamed_knn(Chunked(X, 200), None, n_components=2)
    assert res.indices is None
    got = sign_by_largest_entry(res.projection)
    np.testing.assert_allclose(
        got.numpy(), pca_components(torch.from_numpy(X), 2).numpy(), atol=1e-3
    )


def test_pca_on_the_first_rows_above_the_feature_limit(monkeypatch, gauss):
    monkeypatch.setattr(streaming._constants, "PCA_EXACT_MAX_FEATURES", 4)
    monkeypatch.setattr(streaming._constants, "PCA_SVD_ROWS", 250)
    res = streamed_knn(Chunked(gauss, 100), None, n_components=2)
    x = torch.from_numpy(gauss)
    _, _, v = torch.linalg.svd(x[:250] - x.mean(0), full_matrices=False)
    expected = sign_by_largest_entry((x - x.mean(0)) @ v[:2].T)
    np.testing.assert_allclose(
        sign_by_largest_entry(res.projection).numpy(), expected.numpy(), atol=1e-3
    )


# ---- estimators on streamed input ------------------------------------------------------
def test_dataloader_input_gives_in_memory_quality(digits_data, in_memory_umap):
    X, y = digits_data
    est = tdr.UMAP(random_state=0, init="pca", max_iter=200, device="cpu")
    z = est.fit_transform(loader_of(X, 256))
    assert isinstance(z, torch.Tensor)
    assert z.shape == (1797, 2)
    assert est.stream_info_["passes"] == 2
    assert abs(knn_label_accuracy(z.numpy(), y) - in_memory_umap) <= 0.02


def test_dataloader_of_tuples_uses_the_first_element(digits_data):
    X, y = digits_data
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=300)
    z = tdr.InfoTSNE(random_state=0, max_iter=150, device="cpu").fit_transform(loader)
    assert knn_label_accuracy(z.numpy(), y) > 0.9


def test_iterable_dataset_without_length(gauss):
    class Rows(IterableDataset):
        def __iter__(self):
            yield from torch.from_numpy(gauss)

    est = tdr.UMAP(random_state=0, max_iter=5, device="cpu", backend="torch")
    z = est.fit_transform(DataLoader(Rows(), batch_size=100))
    assert z.shape == (600, 2)
    assert est.stream_info_["n_samples"] == 600


@pytest.mark.parametrize("sparse", [False, True])
def test_backed_anndata_x_gives_in_memory_quality(tmp_path, digits_data, in_memory_umap, sparse):
    ad = pytest.importorskip("anndata")
    X, y = digits_data
    ad.AnnData(sp.csr_matrix(X) if sparse else X).write_h5ad(tmp_path / "d.h5ad")
    backed = ad.read_h5ad(tmp_path / "d.h5ad", backed="r")
    assert is_streamed(backed.X)
    z = tdr.UMAP(random_state=0, init="pca", max_iter=200, device="cpu").fit_transform(backed.X)
    assert isinstance(z, np.ndarray)
    assert z.dtype == np.float32
    assert abs(knn_label_accuracy(z, y) - in_memory_umap) <= 0.02
    backed.file.close()


def test_a_chunked_matrix_is_never_read_whole(digits_data):
    X, y = digits_data
    spy = SpyArray(X)
    z = tdr.LargeVis(random_state=0, max_iter=150, device="cpu").fit_transform(Chunked(spy, 256))
    assert spy.largest == 256
    assert spy.reads >= 2 * 8
    assert knn_label_accuracy(z, y) > 0.9


def test_streamed_input_with_a_precomputed_graph_reads_only_for_pca(digits_data):
    X, _ = digits_data
    graph = knn(torch.from_numpy(X), 14, backend="torch")
    spy = SpyArray(X)
    est = tdr.UMAP(random_state=0, init="pca", max_iter=5, device="cpu")
    est.fit_transform(Chunked(spy, 600), knn=graph)
    assert est.stream_info_["backend"] is None
    assert spy.reads == 3 + 3  # one pass for the statistics, one for the coordinates


def test_streamed_graph_equals_the_in_memory_graph(gauss):
    a = tdr.UMAP(random_state=0, max_iter=2, device="cpu", backend="torch")
    b = tdr.UMAP(random_state=0, max_iter=2, device="cpu", backend="torch")
    a.fit_transform(gauss)
    b.fit_transform(Chunked(gauss, 64))
    np.testing.assert_array_equal(a.knn_.indices.numpy(), b.knn_.indices.numpy())
    np.testing.assert_allclose(a.knn_.distances.numpy(), b.knn_.distances.numpy(), rtol=1e-3)
    np.testing.assert_allclose(
        a.affinity_in_.to_dense().numpy(), b.affinity_in_.to_dense().numpy(), atol=1e-3
    )


# ---- errors -----------------------------------------------------------------------------
def test_shuffled_loader_is_an_error(gauss):
    with pytest.raises(ValueError, match=r"shuffles its rows \(shuffle=True\)"):
        tdr.UMAP(max_iter=2).fit_transform(loader_of(gauss, shuffle=True))


def test_a_loader_that_changes_between_passes_is_an_error(gauss):
    class Drifting(TensorDataset):
        calls = 0

        def __getitem__(self, i):
            Drifting.calls += 1
            row = super().__getitem__(i)[0]
            return (row + (Drifting.calls > len(self)),)

    loader = DataLoader(Drifting(torch.from_numpy(gauss)), batch_size=100)
    with pytest.raises(ValueError, match="did not yield the same rows on every pass"):
        tdr.UMAP(max_iter=2, device="cpu").fit_transform(loader)


def test_non_finite_rows_are_counted(gauss):
    x = gauss.copy()
    x[[3, 200, 201], 1] = np.nan
    x[500, 0] = np.inf
    with pytest.raises(ValueError, match=r"`X` holds NaN or inf values in 4 of 600 rows"):
        tdr.UMAP(max_iter=2, device="cpu").fit_transform(loader_of(x))


def test_dense_affinity_methods_refuse_streamed_input(gauss):
    with pytest.raises(ValueError, match=r"TSNEkhorn computes its affinity from all pairs"):
        tdr.TSNEkhorn(max_iter=2).fit_transform(Chunked(gauss))


def test_keops_cannot_search_streamed_input(gauss):
    with pytest.raises(ValueError, match=r"backend='keops' cannot search a streamed input"):
        tdr.UMAP(max_iter=2, backend="keops").fit_transform(Chunked(gauss))


def test_parameters_are_checked_against_the_row_count_before_reading(gauss):
    spy = SpyArray(gauss[:20])
    with pytest.raises(ValueError, match=r"perplexity \(30\) must be smaller"):
        tdr.TSNE(max_iter=2).fit_transform(Chunked(spy))
    assert spy.reads == 0


def test_batches_must_be_tensors(gauss):
    dicts = DataLoader([{"x": torch.zeros(3)}] * 30, batch_size=5)
    with pytest.raises(TypeError, match=r"must yield tensors, or tuples .* got dict"):
        tdr.UMAP(max_iter=2).fit_transform(dicts)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (np.zeros(5), ValueError, r"must be a 2-D matrix .* got shape \(5,\)"),
        (np.zeros((0, 3)), ValueError, r"`X` is empty"),
    ],
)
def test_chunked_checks_its_matrix(value, error, match):
    with pytest.raises(error, match=match):
        Chunked(value)


def test_chunked_checks_chunk_rows(gauss):
    with pytest.raises(ValueError, match=r"`chunk_rows` must be a positive int or None; got 0"):
        Chunked(gauss, 0)


def test_in_memory_inputs_are_not_streamed(gauss):
    assert not is_streamed(gauss)
    assert not is_streamed(torch.from_numpy(gauss))
    assert not is_streamed(None)
    assert is_streamed(Chunked(gauss))
    assert is_streamed(loader_of(gauss))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("chunk", [64, 1000])
def test_streamed_search_spreads_duplicate_ties_like_the_in_memory_one(backend, chunk):
    """90 % of the rows are copies of a few cells: the streamed graph has the in-memory
    graph's in-degrees (ties spread over the copies), whatever the chunking, and so for a
    shard of the rows."""
    if backend == "faiss":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(100, 8)).astype(np.float32)
    x = np.concatenate([distinct, distinct[rng.integers(0, 10, size=900)]])
    x = x[rng.permutation(len(x))]
    memory = knn(torch.as_tensor(x), 15, backend=backend)
    streamed = streamed_knn(Chunked(x, chunk), 15, backend=backend)
    degree_memory = torch.bincount(memory.indices.reshape(-1), minlength=len(x))
    degree_streamed = torch.bincount(streamed.indices.reshape(-1), minlength=len(x))
    assert int(degree_streamed.max()) == int(degree_memory.max())
    assert int(degree_streamed.max()) <= 3 * 15
    if backend == "torch":  # exact in both: the very same graph
        assert torch.equal(streamed.indices, memory.indices)
    shard = streamed_knn(Chunked(x, chunk), 15, backend=backend, shard=RowShard(300, 700))
    assert torch.equal(shard.indices, streamed.indices[300:700])
