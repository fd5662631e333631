"""TorchDR's PCA tests, ported to this package's names.

Ported from TorchDR's suite (``torchdr/tests/test_incremental_pca.py`` and the
single-process part of ``torchdr/tests/test_distributed_pca.py``; the multi-process check of
``test_distributed_incremental_pca_collectives.py`` is in ``test_pca_family.py``). TorchDR's
``DistributedPCA`` is ``PCA(distributed='auto')`` here. Each test states the behaviour it
pins, rewritten for this package.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn import datasets
from torch.testing import assert_close

from torchdr_sc import PCA, ExactIncrementalPCA, IncrementalPCA

IRIS = datasets.load_iris().data


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_incremental_pca_explains_what_pca_explains():
    x = torch.tensor(IRIS, dtype=torch.float32)
    ipca = IncrementalPCA(n_components=2, batch_size=x.shape[0] // 3).fit(x)
    assert ipca.transform(x).shape == (150, 2)
    _, s, _ = torch.linalg.svd(x - x.mean(0))
    ratio = (s**2 / (s**2).sum())[:2].sum()
    assert_close(ipca.explained_variance_ratio_.sum(), ratio, rtol=1e-3, atol=1e-3)


def test_incremental_pca_projects_a_new_point_on_the_main_axis():
    x = torch.randn(100, 3, dtype=torch.float64, generator=_gen(0)) * 0.1
    x[:10] += torch.tensor([3.0, 4.0, 5.0], dtype=torch.float64)
    new = 0.1 * torch.randn(1, 3, dtype=torch.float64, generator=_gen(1)) + torch.tensor(
        [3.0, 4.0, 5.0], dtype=torch.float64
    )
    y = IncrementalPCA(n_components=2).fit(x).transform(new)
    y = y / torch.sqrt((y**2).sum())
    assert abs(float(y[0, 0])) == pytest.approx(1.0, abs=0.1)


def test_incremental_pca_validates_n_components():
    x = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    with pytest.raises(
        ValueError, match=r"`n_components` \(4\) must be at most the number of features \(3\)"
    ):
        IncrementalPCA(4, batch_size=10).fit(x)
    with pytest.raises(
        ValueError, match=r"`n_components` \(3\) must be at most the rows of a batch"
    ):
        IncrementalPCA(n_components=3).partial_fit(x)


@pytest.mark.parametrize(("n", "d"), [(50, 10), (10, 50)])
def test_incremental_pca_infers_n_components(n, d):
    ipca = IncrementalPCA(n_components=None).partial_fit(torch.rand(n, d, generator=_gen(2)))
    assert ipca.n_components_ == min(n, d)


def test_incremental_pca_refuses_a_change_of_features():
    ipca = IncrementalPCA(n_components=None).fit(torch.randn(100, 20, generator=_gen(3)))
    with pytest.raises(ValueError, match="`X` has 50 features, the earlier batches 20"):
        ipca.partial_fit(torch.randn(100, 50, generator=_gen(4)))


def test_incremental_pca_signs_and_values_stable_over_batch_sizes():
    x = torch.randn(100, 3, generator=_gen(5))
    signs = [
        torch.sign(IncrementalPCA(None, batch_size=b).fit(x).components_) for b in range(10, 20)
    ]
    for a, b in itertools.pairwise(signs):
        assert_close(a, b)
    values = [IncrementalPCA(None, batch_size=b).fit(x).components_ for b in range(20, 40, 3)]
    for a, b in itertools.pairwise(values):
        assert_close(a, b, rtol=1e-1, atol=1e-1)


def test_incremental_pca_fit_equals_partial_fit():
    x = torch.randn(50, 3, generator=_gen(6))
    x[:, 1] *= 1e-5
    x += torch.tensor([5.0, 4.0, 3.0])
    whole = IncrementalPCA(n_components=2, batch_size=10).fit(x)
    parts = IncrementalPCA(n_components=2, batch_size=10)
    for s in range(0, 50, 10):
        parts.partial_fit(x[s : s + 10])
    assert_close(whole.components_, parts.components_, rtol=1e-3, atol=1e-3)


def test_incremental_pca_lowrank_equals_full_svd():
    x = torch.tensor(IRIS, dtype=torch.float32)
    full = IncrementalPCA(n_components=2, batch_size=50).fit(x)
    low = IncrementalPCA(n_components=2, batch_size=50, lowrank=True).fit(x)
    assert_close(full.components_, low.components_, rtol=1e-7, atol=1e-7)


# --- TorchDR's DistributedPCA tests, without a process group ----------------------------


def test_pca_without_group_has_torchdr_shapes_and_matches_exact_pca():
    x = torch.tensor(IRIS, dtype=torch.float32)
    pca = PCA(n_components=2, distributed="auto")
    z = pca.fit_transform(x)
    assert z.shape == (150, 2)
    assert pca.components_.shape == (2, 4)
    assert pca.mean_.shape == (1, 4)
    exact = ExactIncrementalPCA(n_components=2, distributed=False)
    ze = exact.fit_transform(x)
    assert_close(
        z @ pca.components_ + pca.mean_, ze @ exact.components_ + exact.mean_, rtol=1e-4, atol=1e-4
    )


def test_pca_numpy_in_numpy_out_and_every_n_components():
    x = IRIS.astype(np.float32)
    z = PCA(n_components=2).fit_transform(x)
    assert isinstance(z, np.ndarray)
    assert z.shape == (150, 2)
    for k in (1, 2, 3, 4):
        assert PCA(n_components=k).fit(x).transform(x).shape == (150, k)


def test_pca_is_deterministic_and_keeps_float64():
    x = torch.tensor(IRIS, dtype=torch.float64)
    a = PCA(n_components=2, random_state=42).fit_transform(x)
    b = PCA(n_components=2, random_state=42).fit_transform(x)
    assert torch.equal(a, b)
    assert a.dtype == torch.float64


@pytest.mark.parametrize(("n", "d", "k"), [(5, 10, 2), (100, 5, 5), (50, 100, 10)])
def test_pca_edge_shapes(n, d, k):
    assert PCA(n_components=k).fit_transform(torch.randn(n, d, generator=_gen(7))).shape == (n, k)


def test_pca_reconstructs_with_all_components_and_orders_variances():
    x = torch.tensor(IRIS, dtype=torch.float32)
    pca = PCA(n_components=4)
    z = pca.fit_transform(x)
    assert torch.mean((x - (z @ pca.components_ + pca.mean_)) ** 2) < 0.1
    v = z.var(0)
    assert all(v[i] >= v[i + 1] - 1e-5 for i in range(3))


def test_pca_transform_before_fit_raises():
    with pytest.raises(ValueError, match="not fitted"):
        PCA(n_components=2).transform(torch.tensor(IRIS, dtype=torch.float32))
