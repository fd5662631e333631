"""The FFT-interpolated t-SNE repulsion against the exact sums, and its parameters."""

from __future__ import annotations

import pytest
import torch

import torchdr_sc as tdr
from torchdr_sc.distributed import RowShard, resolve_distributed
from torchdr_sc.objective.exact import student_repulsion_terms
from torchdr_sc.objective.interpolated import (
    cauchy_sums,
    lagrange_weights,
    sne_repulsion_fft,
    student_repulsion_terms_fft,
)


def _embedding(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """A t-SNE-like layout: 10 clusters spread over ~60 units, float64."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, d, generator=gen, dtype=torch.float64) * 20
    labels = torch.randint(0, 10, (n,), generator=gen)
    return centres[labels] + torch.randn(n, d, generator=gen, dtype=torch.float64) * 2


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize(("points", "bound"), [(None, 2.5e-2), (4, 1e-2)])
def test_gradient_relative_error_at_defaults_and_with_4_nodes(d, points, bound):
    """openTSNE's grid (the defaults, 3 nodes): about 1.2e-2 in 2-D, 2.2e-2 in 1-D; 4 nodes
    per box: below 1e-2."""
    z = _embedding(5000, d)
    full = RowShard.full(5000)
    rep, zsum = student_repulsion_terms(z, full)
    options = {} if points is None else {"n_interpolation_points": points}
    rep_fft, zsum_fft = student_repulsion_terms_fft(z, full, **options)
    exact, approx = rep / zsum, rep_fft / zsum_fft
    error = float((approx - exact).norm() / exact.norm())
    print(f"d={d}, points={points}: relative gradient error {error:.2e}")
    assert error < bound
    assert abs(float(zsum_fft / zsum) - 1.0) < 1e-3


def test_error_falls_with_finer_boxes():
    z = _embedding(2000, 2, seed=1)
    rep, zsum = student_repulsion_terms(z, RowShard.full(2000))
    errors = []
    for width in (2.0, 1.0, 0.5):
        rep_fft, zsum_fft = student_repulsion_terms_fft(
            z, RowShard.full(2000), ints_in_interval=width
        )
        errors.append(float((rep_fft / zsum_fft - rep / zsum).norm() / (rep / zsum).norm()))
    assert errors[0] > errors[1] > errors[2]


def test_shard_rows_match_the_full_computation():
    z = _embedding(900, 2)
    rep_all, zsum_all = student_repulsion_terms_fft(z, RowShard.full(900))
    parts = [student_repulsion_terms_fft(z, RowShard(s, s + 300)) for s in (0, 300, 600)]
    torch.testing.assert_close(sum(p[0] for p in parts), rep_all)
    torch.testing.assert_close(sum(p[1] for p in parts), zsum_all)


def test_lagrange_weights_sum_to_one_and_reproduce_quadratics():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    w = lagrange_weights(t, 3)
    nodes = (torch.arange(3, dtype=torch.float64) + 0.5) / 3
    torch.testing.assert_close(w.sum(-1), torch.ones(11, dtype=torch.float64))
    torch.testing.assert_close(w @ nodes.square(), t.square())


def test_sums_of_two_far_points_and_self_term():
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    s1, s2 = cauchy_sums(z)
    w = 1.0 / 26.0  # the other point is at distance 5; the point itself has w_ii = 1
    torch.testing.assert_close(
        s1, torch.full((2,), 1.0 + w, dtype=torch.float64), rtol=1e-3, atol=0
    )
    expected = torch.tensor(
        [[1.0 + w**2, 3.0 * w**2, 4.0 * w**2], [1.0 + w**2, 3.0, 4.0]], dtype=torch.float64
    )
    torch.testing.assert_close(s2, expected, rtol=1e-3, atol=1e-6)


def test_tsne_auto_picks_by_size_and_records_it(digits):
    x, _ = digits
    small = tdr.TSNE(max_iter=10, random_state=0).fit(x[:500])
    assert small.repulsion_used_ == "exact"
    assert small.repulsion_for(100_000) == "fft"
    assert tdr.TSNE(n_components=3).repulsion_for(100_000) == "exact"
    forced = tdr.TSNE(max_iter=10, random_state=0, repulsion="fft").fit(x[:500])
    assert forced.derived_params() == {"repulsion_used": "fft"}


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"repulsion": "fft", "n_components": 3}, r"repulsion='fft' supports n_components 1 or 2"),
        ({"repulsion": "barnes-hut"}, r"`repulsion` must be one of 'auto', 'exact', 'fft'"),
        ({"n_interpolation_points": 0}, r"`n_interpolation_points` must be an int in \[1, 10\]"),
        ({"min_num_intervals": 0}, r"`min_num_intervals` must be an int"),
        ({"ints_in_interval": 0.0}, r"`ints_in_interval` must be"),
    ],
)
def test_bad_repulsion_parameters_raise_before_work(params, match):
    with pytest.raises(ValueError, match=match):
        tdr.TSNE(**params).validate()


def test_compiled_attraction_equals_the_eager_one(blobs):
    """The fused (torch.compile) attraction that 'auto' uses on large P, against eager."""
    from torchdr_sc.objective.attraction import StudentAttraction
    from torchdr_sc.objective.exact import attraction_student

    x, _ = blobs
    est = tdr.TSNE(max_iter=1, random_state=0, perplexity=10).fit(x)
    P = est.affinity_in_.to(dtype=torch.float64)  # float64: the algebra, not the round-off
    z = torch.randn(P.n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shard = RowShard(50, 200)
    compiled = StudentAttraction(P, shard, compile=True)
    assert compiled.path == "compiled"
    mask = (P.rows >= 50) & (P.rows < 200)
    torch.testing.assert_close(compiled(z), attraction_student(z, P, mask))


@pytest.mark.parametrize("d", [1, 2])
def test_gaussian_sums_match_the_exact_sums(d):
    from torchdr_sc.objective.interpolated import gaussian_sums

    z = _embedding(3000, d) / 4  # SNE layouts are compact
    charges = torch.cat([torch.ones(3000, 1, dtype=z.dtype), z], 1)
    exact = torch.exp(-torch.cdist(z, z).square()) @ charges
    approx = gaussian_sums(z, charges)
    assert float((approx - exact).norm() / exact.norm()) < 1e-3


def test_sne_fft_gradient_matches_the_exact_one(digits):
    from torchdr_sc.affinity import EntropicAffinity
    from torchdr_sc.knn import knn

    x, _ = digits
    xt = torch.as_tensor(x[:1500], dtype=torch.float64)
    P = EntropicAffinity(perplexity=20).from_knn(knn(xt, 60))
    z = _embedding(1500, 2, seed=3) / 4
    grads = {}
    for repulsion in ("exact", "fft"):
        est = tdr.SNE(repulsion=repulsion)
        grads[repulsion] = est._objective(P, resolve_distributed(False, 1500))(z, 0, _Phase())
        assert est.repulsion_used_ == repulsion
    exact, fft = grads["exact"], grads["fft"]
    assert float((fft - exact).norm() / exact.norm()) < 1e-3
    # the shards of two processes add up to the whole (rows outside a shard are zero)
    halves = [sne_repulsion_fft(z, RowShard(s, e)) for s, e in ((0, 700), (700, 1500))]
    torch.testing.assert_close(halves[0] + halves[1], sne_repulsion_fft(z, RowShard.full(1500)))


class _Phase:
    exaggeration = 1.0
