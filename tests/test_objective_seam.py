"""The objective seam: every gradient comes from ``objective.make_objective``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import torchdr_sc as tdr
from torchdr_sc.affinity import SparseAffinity
from torchdr_sc.objective import OBJECTIVES, ReferenceRows, make_objective
from torchdr_sc.objective.sampled import SampledKernel
from torchdr_sc.optimize import Phase

ESTIMATORS = Path(tdr.__file__).parent / "estimators"
#: What estimators may import from an objective module other than the seam itself:
#: configuration (kernel constants, supported dimensions, thread rule) and the transform's
#: starting positions - no gradient.
CONFIGURATION = {
    "SUPPORTED_DIMS",
    "CROWDED_TERMS",
    "SINGLE_THREAD_WORK",
    "SampledKernel",
    "single_cpu_thread",
    "neighbour_mean",
}


def _objective_imports(tree: ast.AST) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from ..objective.X import name`` in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level:
            parts = node.module.split(".")
            if parts[0] == "objective" and len(parts) > 1:
                found += [(node.module, alias.name) for alias in node.names]
    return found


def _gradient_code(tree: ast.AST) -> list[str]:
    """Lines of a module that compute a gradient themselves: a ``grad`` closure, a call of
    ``torch.autograd`` or ``.backward()``."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in ("grad", "gradient"):
            hits.append(f"line {node.lineno}: def {node.name}")
        if isinstance(node, ast.Attribute) and node.attr in ("autograd", "backward"):
            hits.append(f"line {node.lineno}: .{node.attr}")
    return hits


@pytest.mark.parametrize("path", sorted(ESTIMATORS.glob("*.py")), ids=lambda p: p.name)
def test_no_estimator_computes_a_gradient(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert _gradient_code(tree) == []
    imported = {name for _, name in _objective_imports(tree)}
    assert imported <= CONFIGURATION, sorted(imported - CONFIGURATION)


def test_the_checks_catch_a_gradient_in_an_estimator() -> None:
    source = (
        "from ..objective.exact import tsne_gradient\n"
        "def fit(loss, z):\n"
        "    def grad(z, it, phase):\n"
        "        return torch.autograd.grad(loss, z)\n"
    )
    tree = ast.parse(source)
    assert _objective_imports(tree) == [("objective.exact", "tsne_gradient")]
    assert len(_gradient_code(tree)) == 2


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="`method` must be one of"):
        make_objective("tsne2", None)


def _affinity(n: int = 60, k: int = 6, seed: int = 0) -> tuple[SparseAffinity, torch.Tensor]:
    """A symmetric P on random distinct neighbours (no self-loops), and data of its size."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen)
    others = torch.stack([torch.randperm(n - 1, generator=gen)[:k] for _ in range(n)])
    indices = others + (others >= torch.arange(n)[:, None]).long()
    weights = torch.rand(n, k, generator=gen) + 0.1
    return SparseAffinity.from_knn(indices, weights).symmetrize("mean"), x


OPTIONS = {
    "tsne": {},
    "sne": {},
    "infotsne": {"n_negatives": 10, "seed": 3},
    "negative_sampling": {
        "kernel": SampledKernel("largevis", repulsion=1.0, clip=5.0),
        "n_negatives": 5,
        "seed": 3,
    },
    "tsnekhorn": {"sinkhorn_iter": 5},
    "autograd": {"output": lambda z: 1.0 / (1.0 + torch.cdist(z, z) ** 2), "loss": "kl"},
    "pacmap": {"seed": 3, "n_further": 10},
    "cosne": {"gamma": 2.0, "lambda1": 0.5},
    "densmap": {
        "kernel": SampledKernel("umap", a=1.58, b=0.9, repulsion=1.0, clip=4.0),
        "n_negatives": 5,
        "seed": 3,
        "a": 1.58,
        "b": 0.9,
        "dens_lambda": 2.0,
        "dens_frac": 1.0,
        "dens_var_shift": 0.1,
        "n_epochs": 10,
    },
    "densne": {"dens_lambda": 0.1, "dens_frac": 1.0, "dens_var_shift": 0.1, "max_iter": 10},
}


@pytest.mark.parametrize("method", OBJECTIVES)
def test_every_method_is_built_by_the_one_entry_point(method: str) -> None:
    P, x = _affinity()
    z = torch.randn(P.n, 2, generator=torch.Generator().manual_seed(1))
    options = dict(OPTIONS[method])
    if method == "tsnekhorn":
        options["z0"] = z
    if method in ("densmap", "densne"):  # the data the graph was built on
        options["data"], options["metric"] = x, "euclidean"
    if method == "cosne":  # the h-loss's norms; points inside the Poincaré ball
        options["data"] = x
        z = z / (1.0 + z.norm(dim=1, keepdim=True))
    objective = make_objective(method, P, **options)
    grad = objective(z.clone(), 0, Phase(10, exaggeration=2.0))
    assert grad.shape == z.shape
    assert bool(torch.isfinite(grad).all())
    assert isinstance(objective.path, str)
    assert objective.path
    assert float(grad.norm()) > 0


@pytest.mark.parametrize("method", ["tsne", "sne", "infotsne", "negative_sampling"])
def test_the_same_objective_moves_new_points_on_a_fixed_reference(method: str) -> None:
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(80, 2, generator=gen)
    m, k = 7, 5
    rows = ReferenceRows(torch.randint(0, 80, (m, k), generator=gen), torch.full((m, k), 0.2))
    options = dict(OPTIONS[method])
    objective = make_objective(method, rows, reference=y, **options)
    z = torch.randn(m, 2, generator=gen)
    y_before = y.clone()
    grad = objective(z, 0, Phase(10))
    assert grad.shape == (m, 2)
    assert bool(torch.isfinite(grad).all())
    assert torch.equal(y, y_before)  # the reference does not move
    assert "reference fixed" in objective.path


def test_tsne_objective_is_the_tsne_gradient() -> None:
    """The seam assembles, it does not change the arithmetic: TSNE's objective equals the
    exact gradient of KL(P || Q) by autograd."""
    P, _ = _affinity(n=40)
    z = torch.randn(P.n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    P64 = P.to(dtype=torch.float64)
    grad = make_objective("tsne", P64, compile=False)(z, 0, Phase(1))
    zz = z.clone().requires_grad_(True)
    p = P64.to_dense()
    p = p / p.sum()
    q = 1.0 / (1.0 + torch.cdist(zz, zz) ** 2)
    q = q * (1.0 - torch.eye(P.n, dtype=z.dtype))
    kl = (p[p > 0] * (p[p > 0] / (q / q.sum())[p > 0]).log()).sum()
    (expected,) = torch.autograd.grad(kl, zz)
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-9)
