"""The CPU epoch kernel compiled ahead of time, cached on disk and loaded in milliseconds.

:func:`torch.compile` re-traces :func:`~torchdr_sc.objective.pairs.epoch_pair_terms` in
every new process, even with its caches warm, before the first epoch runs (a sizeable part
of a whole fit: ``benchmarks/README.md``). Here the same function is exported once
(:func:`torch.export.export`, shape-generic in the number of points and of edges), compiled
by AOTInductor into a shared library packaged as a ``.pt2`` file, and later processes load
that file instead of tracing anything. The package is built on first use (once per
machine, kernel variant and PyTorch version; the build announces itself) into
:func:`kernel_cache_dir`.

The loaded kernel reads the embedding as a contiguous ``(n, d)`` float32 tensor (a point's
coordinates share a cache line, which the random gathers of negatives like) and int32 edge
ids: :func:`supported` says when it applies; other inputs take :func:`torch.compile`.
A cached package that does not load (a damaged file, another build of PyTorch with the
same version) is built again once; anything else that goes wrong while building or loading
is raised to the caller, which falls back to :func:`torch.compile`
(:class:`~torchdr_sc.objective.epoch.SampledEpoch`).

The package is named after everything its code depends on (:func:`build_key`): PyTorch's
version, the source of :mod:`~torchdr_sc.objective.pairs` and of this module, the exact CPU
(model and instruction-set flags: the code is compiled for this CPU, and a cache shared by
machines of different generations never loads it on another), and the kernel's options. The
cache itself (who may have written a package, its digest, the build lock) is
:mod:`~torchdr_sc.objective.kernel_cache`.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._logging import get_logger
from . import kernel_cache, pairs

logger = get_logger(__name__)

#: Environment variable naming the directory of compiled kernels (default:
#: ``$XDG_CACHE_HOME/torchdr_sc/kernels``, i.e. ``~/.cache/torchdr_sc/kernels``).
CACHE_DIR_ENV = kernel_cache.CACHE_DIR_ENV
#: Inductor options of the package: a parallel loop whatever the example's size, with the
#: thread count read at run time (the thread policy changes it between fits).
INDUCTOR_OPTIONS = {"cpp.dynamic_threads": True}
#: Edges in the example the kernel is traced with (the shapes themselves stay symbolic).
EXAMPLE_EDGES = 4096

_LOADED: dict[str, Callable[..., Any]] = {}


def kernel_cache_dir() -> Path:
    """Where compiled epoch kernels are kept
    (:func:`~torchdr_sc.objective.kernel_cache.cache_dir`)."""
    return kernel_cache.cache_dir()


def available() -> bool:
    """Whether this PyTorch builds and loads AOTInductor packages (2.6 and later; checked
    without importing TorchInductor)."""
    return torch.torch_version.TorchVersion(torch.__version__) >= (2, 6)


def supported(z: torch.Tensor, heads: torch.Tensor) -> bool:
    """Whether the compiled kernel takes this embedding and these edge ids: float32 on CPU,
    int32 ids (fewer than ``2^31`` points)."""
    cpu = z.device.type == "cpu" and heads.device.type == "cpu"
    return cpu and z.dtype == torch.float32 and heads.dtype == torch.int32 and z.ndim == 2


def build_key(kind: str, n_negatives: int, discard_tails: bool, dim: int) -> dict:
    """Everything the machine code of one kernel variant depends on (recorded with the package
    and checked before it is loaded)."""
    sources = inspect.getsource(pairs) + inspect.getsource(_EpochModule)
    return {
        "torch": torch.__version__,
        "source": hashlib.sha256(sources.encode()).hexdigest(),
        "cpu": kernel_cache.cpu_signature(),
        "options": repr(sorted(INDUCTOR_OPTIONS.items())),
        "kind": kind,
        "n_negatives": int(n_negatives),
        "discard_tails": bool(discard_tails),
        "dim": int(dim),
    }


def kernel_key(kind: str, n_negatives: int, discard_tails: bool, dim: int) -> str:
    """Name of the package of one kernel variant on this machine and PyTorch (hex digest of
    :func:`build_key`)."""
    return kernel_cache.describe_key(build_key(kind, n_negatives, discard_tails, dim))


class _EpochModule(torch.nn.Module):
    """:func:`~torchdr_sc.objective.pairs.epoch_pair_terms` with its options fixed, over an
    ``(n, d)`` embedding, returning the ``2 d`` per-edge vectors flat (what is exported)."""

    def __init__(self, kind: str, n_negatives: int, discard_tails: bool) -> None:
        super().__init__()
        self.options = {
            "kind": kind,
            "n_negatives": int(n_negatives),
            "discard_tails": bool(discard_tails),
        }

    def forward(
        self,
        z: torch.Tensor,
        heads: torch.Tensor,
        tails: torch.Tensor,
        key: torch.Tensor,
        consts: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        coords = list(z.unbind(1))
        g_att, g_head = pairs.epoch_pair_terms(coords, heads, tails, key, consts, **self.options)
        return (*g_att, *g_head)


def build_package(path: Path, kind: str, n_negatives: int, discard_tails: bool, dim: int) -> None:
    """Export and compile one kernel variant into the package ``path`` (a temporary name that
    :func:`~torchdr_sc.objective.kernel_cache.cached_kernel` renames into place)."""
    inductor = importlib.import_module("torch._inductor")  # slow to import: only when building

    n, edges = 64, EXAMPLE_EDGES
    example = (
        torch.zeros((n, dim), dtype=torch.float32),
        torch.zeros(edges, dtype=torch.int32),
        torch.ones(edges, dtype=torch.int32),
        pairs.hash_key(0, 0, "cpu"),
        torch.ones(5, dtype=torch.float32),
    )
    points, active = torch.export.Dim("points", min=2), torch.export.Dim("edges", min=2)
    shapes = ({0: points}, {0: active}, {0: active}, None, None)
    module = _EpochModule(kind, n_negatives, discard_tails)
    with warnings.catch_warnings():  # PyTorch's own deprecations inside export
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.export.export(module, example, dynamic_shapes=shapes, strict=False)
        inductor.aoti_compile_and_package(
            program, package_path=str(path), inductor_configs=dict(INDUCTOR_OPTIONS)
        )


def load_package(path: Path) -> Callable[..., Any]:
    """A callable running the package ``path`` on a list of input tensors.

    PyTorch's package loader directly where its constructor has the
    signature this PyTorch was tested with; otherwise :func:`torch._inductor.aoti_load_package`
    (the documented entry point, which first imports TorchInductor, a slow import).
    """
    loader_type = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader_type is not None:
        try:
            loader = loader_type(str(path), "model", False, 1, -1)
            return loader.run
        except TypeError:  # another constructor signature: use the documented loader
            pass
    inductor = importlib.import_module("torch._inductor")
    model = inductor.aoti_load_package(str(path))
    return lambda inputs: model(*inputs)


def epoch_kernel(
    kind: str, n_negatives: int, discard_tails: bool, dim: int
) -> Callable[..., tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """The compiled epoch of one variant: loaded from the cache, built there on first use.

    Returns
    -------
    callable
        ``kernel(z, heads, tails, key, consts) -> (g_att, g_head)`` with the arguments and
        results of :func:`~torchdr_sc.objective.pairs.epoch_pair_terms` (the embedding as
        one ``(n, d)`` tensor; see :func:`supported`).

    Raises
    ------
    Exception
        Whatever building or loading raised (the caller falls back to ``torch.compile``).
    """
    key = build_key(kind, n_negatives, discard_tails, dim)
    name = kernel_cache.describe_key(key)
    if name not in _LOADED:
        _LOADED[name] = kernel_cache.cached_kernel(
            f"epoch-{name}",
            key,
            lambda path: build_package(path, kind, n_negatives, discard_tails, dim),
            load_package,
            what=f"{kind} epoch kernel",
        )
    run = _LOADED[name]

    def kernel(z, heads, tails, key, consts):
        out = run([z.contiguous(), heads, tails, key, consts])
        return list(out[:dim]), list(out[dim:])

    return kernel
