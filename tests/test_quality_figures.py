"""The quality figures beyond label accuracy: trustworthiness, global structure, trajectories."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.manifold import trustworthiness as sklearn_trustworthiness

from benchmarks.metrics import pseudotime_correlation
from torchdr_sc.quality import centroid_distance_correlation, trustworthiness


@pytest.fixture
def noisy_projection():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8))
    return x, x[:, :2] + 0.4 * rng.normal(size=(600, 2))


def test_trustworthiness_is_sklearns(noisy_projection):
    x, z = noisy_projection
    for k in (5, 15):
        expected = sklearn_trustworthiness(x, z, n_neighbors=k)
        assert trustworthiness(x, z, k=k) == pytest.approx(expected, abs=1e-12)


def test_trustworthiness_on_a_sample_is_the_sample_mean(noisy_projection):
    """The penalty sums over queries, so the figure on two halves averages to the whole."""
    x, z = noisy_projection
    k, n = 15, len(x)
    halves = np.array_split(np.random.default_rng(1).permutation(n), 2)
    parts = [trustworthiness(x, z, h, k=k, block=7) for h in halves]
    sizes = [len(h) for h in halves]
    assert np.average(parts, weights=sizes) == pytest.approx(trustworthiness(x, z, k=k))


def test_trustworthiness_counts_tied_points_at_their_lowest_rank():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    x = np.vstack([x, x[:50]])  # exact duplicates, as real data has
    assert trustworthiness(x, x.copy()) == pytest.approx(1.0)
    assert trustworthiness(x, rng.normal(size=x.shape)) < 0.6


def test_centroid_distance_correlation():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10, size=(6, 5))
    labels = np.repeat(np.arange(6), 40)
    x = centres[labels] + rng.normal(size=(240, 5))
    assert centroid_distance_correlation(x, 2.0 * x[:, :5], labels) == pytest.approx(1.0)
    shuffled = rng.permutation(6)
    scrambled = centres[shuffled][labels] + rng.normal(size=(240, 5))
    assert centroid_distance_correlation(x, scrambled, labels) < 0.6
    assert np.isnan(centroid_distance_correlation(x, x, labels % 2))
    # an excluded label does not enter
    labels_d = labels.copy()
    labels_d[:3] = 99
    with_odd = centroid_distance_correlation(x, x, labels_d, exclude=("99",))
    assert with_odd == pytest.approx(1.0)


def test_pseudotime_correlation():
    rng = np.random.default_rng(0)
    n = 1500
    lineage = rng.integers(0, 2, n)  # two lineages sharing population 0 at the root
    t = rng.random(n) * 2.0
    t[:100] = 0.0
    population = np.where(t == 0, 0, 1 + lineage)
    lineages = np.array([[0, 1], [0, 2]])
    angle = np.where(lineage == 0, 0.3, 2.5)
    curve = np.c_[t * np.cos(angle * t), t * np.sin(angle * t)]  # curved paths from the origin
    good = curve + 0.01 * rng.normal(size=(n, 2))
    assert pseudotime_correlation(good, t, population, lineages) > 0.95
    assert abs(pseudotime_correlation(rng.normal(size=(n, 2)), t, population, lineages)) < 0.2
    broken = good.copy()
    broken[t > 1.0] += 100.0  # the far halves cut off: unreachable cells rank last, tied
    assert pseudotime_correlation(broken, t, population, lineages) < 0.95
