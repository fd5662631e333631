"""The CPU epoch kernel compiled ahead of time, cached on disk and loaded in milliseconds.

:func:`torch.compile` re-traces :func:`~torchdr_sc.objective.pairs.epoch_pair_terms` in
every new process, even with its caches warm: ~3.6 s on 2 CPU cores before the first epoch
runs, a fifth of a 200k-cell UMAP fit. Here the same function is exported once
(:func:`torch.export.export`, shape-generic in the number of points and of edges), compiled
by AOTInductor into a shared library packaged as a ``.pt2`` file, and later processes load
that file (a few milliseconds) instead of tracing anything. The package is built on first
use (~20 s on 2 cores, once per machine, kernel variant and PyTorch version) into
:func:`kernel_cache_dir`.

The loaded kernel reads the embedding as a contiguous ``(n, d)`` float32 tensor (a point's
coordinates share a cache line, which the random gathers of negatives like) and int32 edge
ids: :func:`supported` says when it applies; other inputs take :func:`torch.compile`.
A cached package that does not load (a damaged file, another build of PyTorch with the
same version) is built again once; anything else that goes wrong while building or loading
is raised to the caller, which falls back to :func:`torch.compile`
(:class:`~torchdr_sc.objective.epoch.SampledEpoch`).

The package is named after everything its code depends on (:func:`kernel_key`): PyTorch's
version, the source of :mod:`~torchdr_sc.objective.pairs` and of this module, the CPU's
vector instruction set (a cache shared by machines of different generations never loads
an AVX-512 kernel on an AVX2 machine), and the kernel's options.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import platform
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._logging import get_logger
from . import pairs

logger = get_logger(__name__)

#: Environment variable naming the directory of compiled kernels (default:
#: ``$XDG_CACHE_HOME/torchdr_sc/kernels``, i.e. ``~/.cache/torchdr_sc/kernels``).
CACHE_DIR_ENV = "TORCHDR_SC_CACHE_DIR"
#: Inductor options of the package: a parallel loop whatever the example's size, with the
#: thread count read at run time (the thread policy changes it between fits).
INDUCTOR_OPTIONS = {"cpp.dynamic_threads": True}
#: Edges in the example the kernel is traced with (the shapes themselves stay symbolic).
EXAMPLE_EDGES = 4096

_LOADED: dict[str, Callable[..., Any]] = {}


def kernel_cache_dir() -> Path:
    """Where compiled epoch kernels are kept: ``$TORCHDR_SC_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/torchdr_sc/kernels`` (``~/.cache/torchdr_sc/kernels``)."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torchdr_sc" / "kernels"


def available() -> bool:
    """Whether this PyTorch builds and loads AOTInductor packages (2.6 and later; checked
    without importing TorchInductor)."""
    return torch.torch_version.TorchVersion(torch.__version__) >= (2, 6)


def supported(z: torch.Tensor, heads: torch.Tensor) -> bool:
    """Whether the compiled kernel takes this embedding and these edge ids: float32 on CPU,
    int32 ids (fewer than ``2^31`` points)."""
    cpu = z.device.type == "cpu" and heads.device.type == "cpu"
    return cpu and z.dtype == torch.float32 and heads.dtype == torch.int32 and z.ndim == 2


def kernel_key(kind: str, n_negatives: int, discard_tails: bool, dim: int) -> str:
    """Name of the package of one kernel variant on this machine and PyTorch (hex digest)."""
    sources = inspect.getsource(pairs) + inspect.getsource(_EpochModule)
    parts = [
        torch.__version__,
        hashlib.sha256(sources.encode()).hexdigest(),
        torch.backends.cpu.get_cpu_capability(),
        platform.machine(),
        repr(sorted(INDUCTOR_OPTIONS.items())),
        kind,
        str(int(n_negatives)),
        str(bool(discard_tails)),
        str(int(dim)),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


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
    """Export and compile one kernel variant into the package ``path``.

    Written to a temporary file in the same directory, then renamed: processes building the
    same package at once (``torchrun``) each write a whole file, and readers never see a
    partial one.
    """
    inductor = importlib.import_module("torch._inductor")  # ~1 s: only when building

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():  # PyTorch's own deprecations inside export
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.export.export(module, example, dynamic_shapes=shapes, strict=False)
            inductor.aoti_compile_and_package(
                program, package_path=tmp, inductor_configs=dict(INDUCTOR_OPTIONS)
            )
        os.chmod(tmp, 0o644)  # readable like any cache file (mkstemp makes it private)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_package(path: Path) -> Callable[..., Any]:
    """A callable running the package ``path`` on a list of input tensors.

    PyTorch's package loader directly (milliseconds) where its constructor has the
    signature this PyTorch was tested with; otherwise :func:`torch._inductor.aoti_load_package`
    (the documented entry point, which first imports TorchInductor: ~1 s).
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
    name = kernel_key(kind, n_negatives, discard_tails, dim)
    if name not in _LOADED:
        path = kernel_cache_dir() / f"epoch-{name}.pt2"
        built = not path.exists()
        if built:
            logger.info(
                "compiling the %s epoch kernel once for this machine (~20 s), cached in %s",
                kind,
                path.parent,
            )
            build_package(path, kind, n_negatives, discard_tails, dim)
        try:
            _LOADED[name] = load_package(path)
        except Exception as err:  # a cached file this process cannot load: rebuilt once
            if built:
                raise
            logger.info("rebuilding the cached epoch kernel %s (%s)", path, type(err).__name__)
            build_package(path, kind, n_negatives, discard_tails, dim)
            _LOADED[name] = load_package(path)
    run = _LOADED[name]

    def kernel(z, heads, tails, key, consts):
        out = run([z.contiguous(), heads, tails, key, consts])
        return list(out[:dim]), list(out[dim:])

    return kernel
