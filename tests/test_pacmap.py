"""PaCMAP: its pairs, its schedule, its gradient, the estimator, and the pacmap package."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import torchdr_sc as tdr
from torchdr_sc._device import cpu_threads
from torchdr_sc._random import make_generator
from torchdr_sc.affinity.pacmap import PACMAPAffinity, near_pair_indices
from torchdr_sc.knn import knn
from torchdr_sc.objective import ReferenceRows, make_objective
from torchdr_sc.objective.native_pacmap import library
from torchdr_sc.objective.pacmap import pacmap_weights
from torchdr_sc.objective.pacmap_pairs import further_pairs, mid_near_pairs
from torchdr_sc.optimize import Phase
from torchdr_sc.quality import knn_label_accuracy

FAST = {"max_iter": 60, "iter_per_phase": 20, "device": "cpu"}


@pytest.fixture(scope="module")
def blobs30():
    """3000 x 30 Gaussian blobs (10 centres): enough pair entries for two kernel threads."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 30)) * 3
    x = rng.normal(size=(3000, 30)) + np.repeat(centres, 300, axis=0)
    return x.astype(np.float32), np.repeat(np.arange(10), 300)


@pytest.fixture(scope="module")
def digits_pairs():
    """digits as a tensor, its 60-NN graph and PaCMAP's near pairs on it."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data, dtype=torch.float32)
    graph = knn(x, 60, backend="torch", metric="sqeuclidean")
    return x, graph, PACMAPAffinity(10).from_knn(graph)


# ---- the schedule -----------------------------------------------------------------------


def test_the_weights_follow_the_papers_three_phases():
    assert pacmap_weights(0, 100) == (2.0, 1000.0, 1.0)
    w_nb, w_mn, w_fp = pacmap_weights(50, 100)
    assert (w_nb, w_fp) == (2.0, 1.0)
    assert w_mn == pytest.approx(0.5 * 1000 + 0.5 * 3)  # linear from 1000 to 3
    assert pacmap_weights(99, 100)[1] == pytest.approx(0.01 * 1000 + 0.99 * 3)
    assert pacmap_weights(100, 100) == pacmap_weights(199, 100) == (3.0, 3.0, 1.0)
    assert pacmap_weights(200, 100) == pacmap_weights(449, 100) == (1.0, 0.0, 1.0)
    assert pacmap_weights(20, 10) == (1.0, 0.0, 1.0)


def test_the_objective_drops_the_mid_near_term_in_the_last_phase(digits_pairs):
    x, _, P = digits_pairs
    objective = make_objective("pacmap", P, data=x, seed=0, iter_per_phase=10)
    without = make_objective("pacmap", P, data=x, seed=0, iter_per_phase=10, n_mid_near=0)
    z = torch.randn(P.n, 2, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(objective(z, 5, Phase(1)), without(z, 5, Phase(1)))
    assert torch.equal(objective(z, 20, Phase(1)), without(z, 20, Phase(1)))
    assert objective.factors(0) == (20.0 * 2, 20000.0 * 1000, -2.0)


# ---- the pairs --------------------------------------------------------------------------


def test_near_pairs_are_the_nearest_by_the_scaled_distance(digits_pairs):
    _, graph, P = digits_pairs
    near = P.cols.view(P.n, 10).numpy()
    assert torch.equal(P.rows, torch.arange(P.n).repeat_interleave(10))
    assert torch.all(P.weights == 1)
    d = np.sqrt(graph.distances.double().numpy())
    idx = graph.indices.numpy()
    sigma = np.maximum(d[:, 3:6].mean(1), 1e-10)
    scaled = d**2 / (sigma[:, None] * sigma[idx])
    for i in range(0, P.n, 7):
        expected = idx[i, np.argsort(scaled[i], kind="stable")[:10]]
        assert set(near[i]) == set(expected)
        assert i not in near[i]
        assert len(set(near[i])) == 10
    plain = idx[:, :10]
    differ = np.mean([set(a) != set(b) for a, b in zip(near, plain, strict=True)])
    assert differ > 0.2  # the scaling chooses other neighbours than the plain kNN


def test_near_pairs_need_enough_neighbours(digits_pairs):
    _, graph, _ = digits_pairs
    with pytest.raises(ValueError, match=r"n_neighbors \(10\) needs a kNN graph.*got k=5"):
        PACMAPAffinity(10).from_knn(graph.truncate(5))
    assert near_pair_indices(graph.truncate(12), 10).shape == (graph.n_samples, 10)


def _ranks(x: torch.Tensor, partners: torch.Tensor) -> np.ndarray:
    """Each partner's rank among the other points by distance, scaled to [0, 1]."""
    d = torch.cdist(x, x)
    d.fill_diagonal_(-1.0)
    order = d.argsort(1).argsort(1).float()  # rank of each column (self is 0)
    return ((order.gather(1, partners) - 1) / (x.shape[0] - 2)).numpy()


def test_mid_near_pairs_are_the_second_closest_of_six(digits_pairs):
    x, _, _ = digits_pairs
    mid = mid_near_pairs(x, 5, make_generator(0, "cpu"))
    assert mid.shape == (x.shape[0], 5)
    assert not (mid == torch.arange(x.shape[0])[:, None]).any()
    assert all(len(set(row)) == 5 for row in mid.tolist())
    # the 2nd smallest of 6 uniform ranks has mean 2 / 7; the closest 1 / 7, a random one 1 / 2
    assert _ranks(x, mid).mean() == pytest.approx(2 / 7, abs=0.02)
    again = mid_near_pairs(x, 5, make_generator(0, "cpu"))
    assert torch.equal(mid, again)


def test_further_pairs_are_random_non_neighbours(digits_pairs):
    x, _, P = digits_pairs
    far = further_pairs(P, 20, make_generator(1, "cpu"))
    near = P.cols.view(P.n, 10)
    assert far.shape == (P.n, 20)
    assert not (far == torch.arange(P.n)[:, None]).any()
    assert not (far[:, :, None] == near[:, None, :]).any()
    assert all(len(set(row)) == 20 for row in far.tolist())
    assert _ranks(x, far).mean() == pytest.approx(0.5, abs=0.02)


def test_small_data_gets_fewer_pairs_not_a_hang():
    x = torch.randn(15, 4, generator=torch.Generator().manual_seed(0))
    P = PACMAPAffinity(10).from_knn(knn(x, 14, backend="torch"))
    far = further_pairs(P, 20, make_generator(0, "cpu"))
    assert far.shape == (15, 4)  # 14 others, 10 of them near
    assert not (far[:, :, None] == P.cols.view(15, 10)[:, None, :]).any()
    assert mid_near_pairs(x, 5, make_generator(0, "cpu")).shape == (15, 2)
    z = tdr.PACMAP(random_state=0, **FAST).fit_transform(x.numpy())
    assert z.shape == (15, 2)
    assert np.isfinite(z).all()


# ---- the gradient -----------------------------------------------------------------------


def _loss(objective, z: torch.Tensor, iteration: int) -> torch.Tensor:
    """PaCMAP's loss from the objective's stored pairs (each pair stored twice)."""
    w = pacmap_weights(iteration, objective.iter_per_phase)
    total = z.new_zeros(())
    for kind, weight, index in zip(objective.kinds, w, range(3), strict=True):
        rows = torch.repeat_interleave(torch.arange(z.shape[0]), kind.counts)
        d = 1.0 + ((z[rows] - z[kind.cols.long()]) ** 2).sum(1)
        if index == 0:
            term = d / (10.0 + d) * kind.weights
        else:
            term = d / (10000.0 + d) if index == 1 else 1.0 / (1.0 + d)
        total = total + weight * term.sum() / 2.0
    return total


@pytest.mark.parametrize("iteration", [0, 37, 150, 300])
def test_the_gradient_is_the_gradient_of_pacmaps_loss(digits_pairs, iteration):
    x, _, P = digits_pairs
    P64 = P.to(dtype=torch.float64)
    z = torch.randn(P.n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for compile in ("auto", False):
        objective = make_objective("pacmap", P64, data=x, seed=3, compile=compile)
        zz = z.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(_loss(objective, zz, iteration), zz)
        grad = objective(z, iteration, Phase(1))
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(library() is None, reason="no C compiler")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [2, 3])
def test_the_c_kernel_gives_the_pytorch_forms_bits(blobs30, dtype, dim):
    x = torch.from_numpy(blobs30[0])
    P = PACMAPAffinity(10).from_knn(knn(x, 60, backend="torch")).to(dtype=dtype)
    native = make_objective("pacmap", P, data=x, seed=1)
    eager = make_objective("pacmap", P, data=x, seed=1, compile=False)
    assert (native.path, eager.path) == ("pairs native", "pairs eager")
    z = torch.randn(P.n, dim, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 5
    for it in (0, 120, 260):
        with cpu_threads(2):
            two = native(z, it, Phase(1))
        with cpu_threads(1):
            one = native(z, it, Phase(1))
        assert torch.equal(one, two)
        assert torch.equal(one, eager(z, it, Phase(1)))


def test_new_points_are_attracted_to_their_reference_neighbours():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(80, 2, generator=gen)
    rows = ReferenceRows(torch.randint(0, 80, (7, 5), generator=gen), torch.ones(7, 5))
    objective = make_objective("pacmap", rows, reference=y)
    z = torch.randn(7, 2, generator=gen) * 10
    y_before = y.clone()
    grad = objective(z, 0, Phase(1))
    assert objective.path == "reference fixed"
    assert torch.equal(y, y_before)
    toward = (y[rows.indices].mean(1) - z) * -grad  # descent moves toward the neighbours
    assert (toward.sum(1) > 0).all()


# ---- the estimator ----------------------------------------------------------------------


def test_defaults_are_the_papers():
    est = tdr.PACMAP()
    assert (est.n_neighbors, est.MN_ratio, est.FP_ratio) == (10, 0.5, 2.0)
    assert (est.optimizer, est.lr, est.iter_per_phase, est.init) == ("Adam", 1.0, 100, "pca")
    assert est.planned_iterations(1000) == 450
    assert est.pair_counts() == (10, 5, 20)
    assert est.neighbours_needed(10_000) == 60
    assert est.neighbours_needed(30) == 29


def test_fit_numpy_and_torch(digits):
    X, y = digits
    est = tdr.PACMAP(random_state=0, device="cpu")
    z = est.fit_transform(X)
    assert isinstance(z, np.ndarray)
    assert z.shape == (len(X), 2)
    assert z.dtype == np.float32
    assert np.isfinite(z).all()
    assert est.n_iter_ == 450
    assert est.execution_path_ in ("pairs native", "pairs eager")
    assert est.affinity_in_.nnz == 10 * len(X)
    assert knn_label_accuracy(z, y) > 0.95
    zt = tdr.PACMAP(random_state=0, **FAST).fit_transform(torch.from_numpy(X[:300]))
    assert isinstance(zt, torch.Tensor)
    assert zt.shape == (300, 2)


@pytest.mark.parametrize(("compile", "rows"), [("auto", 3000), (False, 1500)])
def test_same_seed_same_embedding_with_1_and_2_threads(blobs30, compile, rows):
    data = blobs30[0][:rows]

    def fit():
        est = tdr.PACMAP(random_state=0, compile=compile, **{**FAST, "max_iter": 45})
        return est.fit_transform(data)

    with cpu_threads(1):
        one = fit()
    with cpu_threads(2):
        two = fit()
    np.testing.assert_array_equal(one, two)
    other = tdr.PACMAP(random_state=1, compile=compile, **FAST).fit_transform(data)
    assert not np.array_equal(one, other)


def test_a_given_affinity_gives_the_same_embedding(digits):
    X, _ = digits
    est = tdr.PACMAP(random_state=0, **FAST)
    z = est.fit_transform(X[:500])
    again = tdr.PACMAP(random_state=0, **FAST).fit_transform(X[:500], affinity=est.affinity_in_)
    np.testing.assert_array_equal(z, again)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.embedding_.numpy(), z)


def test_transform_places_new_points_by_their_neighbours(digits):
    X, y = digits
    est = tdr.PACMAP(random_state=0, device="cpu")
    ref = est.fit_transform(X[:1400])
    new = est.transform(X[1400:])
    assert new.shape == (len(X) - 1400, 2)
    assert np.isfinite(new).all()
    np.testing.assert_array_equal(est.embedding_.numpy(), ref)  # the reference stays
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(10).fit(ref, y[:1400])
    assert clf.score(new, y[1400:]) > 0.93
    np.testing.assert_array_equal(est.transform(X[1400:]), new)
    assert est.transform(X[1400:1410], max_iter=5).shape == (10, 2)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"n_neighbors": 0}, ValueError, r"`n_neighbors` must be an int in \[1, inf\); got 0"),
        ({"n_neighbors": 2.5}, TypeError, r"`n_neighbors` must be an int"),
        ({"MN_ratio": -0.5}, ValueError, r"`MN_ratio` must be a float in \[0, inf\); got -0.5"),
        ({"FP_ratio": "2"}, TypeError, r"`FP_ratio` must be a float in \[0, inf\)"),
        ({"iter_per_phase": -1}, ValueError, r"`iter_per_phase` must be an int in \[0, inf\)"),
        ({"metric_in": "chebyshev"}, ValueError, r"`metric_in` must be one of 'cosine'"),
        ({"optimizer": "LBFGS"}, ValueError, r"`optimizer` must be one of"),
    ],
)
def test_bad_parameters_are_refused_before_any_work(params, error, match):
    with pytest.raises(error, match=match):
        tdr.PACMAP(**params).fit_transform(np.zeros((50, 3), np.float32))


def test_too_few_samples_and_missing_data_are_refused(digits):
    X, _ = digits
    with pytest.raises(ValueError, match=r"n_neighbors \(10\) must be smaller than the number"):
        tdr.PACMAP().fit_transform(X[:10])
    graph = knn(torch.from_numpy(X[:100]), 60, backend="torch")
    with pytest.raises(ValueError, match=r"PACMAP draws its mid-near pairs from the data"):
        tdr.PACMAP().fit_transform(knn=graph)
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.from_numpy(X)), batch_size=256)
    with pytest.raises(ValueError, match=r"got a streamed input \(DataLoader\)"):
        tdr.PACMAP().fit_transform(loader)


# ---- against the pacmap package (slow) ----------------------------------------------------


def _mean_accuracy(fit, X, y, seeds=(0, 1, 2)) -> float:
    return float(np.mean([knn_label_accuracy(fit(X, seed), y) for seed in seeds]))


@pytest.mark.slow
@pytest.mark.parametrize("data", ["digits", "pbmc"])
def test_quality_matches_the_pacmap_package(request, data):
    pacmap = pytest.importorskip("pacmap")
    X, y = request.getfixturevalue(data)

    def ours(X, seed):
        return tdr.PACMAP(random_state=seed, device="cpu").fit_transform(X)

    def theirs(X, seed):
        return pacmap.PaCMAP(random_state=seed).fit_transform(X)

    acc_ours, acc_theirs = _mean_accuracy(ours, X, y), _mean_accuracy(theirs, X, y)
    print(f"{data}: 10-NN accuracy ours {acc_ours:.4f}, pacmap {acc_theirs:.4f}")
    assert acc_ours >= acc_theirs - 0.02
