"""The one place where data moves between numpy, torch and devices.

Conventions (CONTRIBUTING.md, section 3):

- ``device="auto"``: a torch input keeps its device; numpy input goes to CUDA when available.
- Computation is float32 by default; float64 input stays float64; integer, bool and
  float16/bfloat16 input is upcast to float32 (documented, never an error).
- ``n_jobs`` (the ``tl`` functions' CPU threads) maps onto torch's thread count here;
  ``n_jobs=None`` uses the cores other processes leave free (:mod:`torchdr_sc._threads`).
- Results go back in the input's format: numpy float32 for numpy input, a detached tensor
  on the input's device for torch input.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ._threads import decided_threads, free_core_threads, usable_cores
from ._validation import check_finite_rows

DeviceLike = str | torch.device | None


def cuda_available() -> bool:
    """Return whether a CUDA device can be used."""
    return torch.cuda.is_available()


#: The device types the package computes on.
DEVICE_TYPES = ("cpu", "cuda")
_DEVICE_HELP = "`device` must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'"


def resolve_device(device: DeviceLike, data: Any = None) -> torch.device:
    """Turn a user ``device`` argument into a :class:`torch.device`.

    Parameters
    ----------
    device
        ``'auto'`` / ``None`` (torch input keeps its device when it is a CPU or CUDA one;
        other input goes to CUDA when available, else CPU), ``'cpu'``, ``'cuda'`` or
        ``'cuda:<index>'`` (a string or a :class:`torch.device`).
    data
        The input data, consulted for ``'auto'``.

    Raises
    ------
    ValueError
        A device that is not CPU or CUDA (``'mps'``, ``'meta'``, ...: the kNN search,
        the sparse affinities and the eigensolvers need one of those two), or CUDA without
        a CUDA device, or a CUDA index beyond the devices present.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if isinstance(data, torch.Tensor) and data.device.type in DEVICE_TYPES:
            return data.device
        return torch.device("cuda") if cuda_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        msg = f"{_DEVICE_HELP}; got {device!r}."
        raise ValueError(msg) from err
    if dev.type not in DEVICE_TYPES:
        msg = f"{_DEVICE_HELP}; got {device!r} (only CPU and CUDA devices are supported)."
        raise ValueError(msg)
    if dev.type == "cuda" and not cuda_available():
        msg = "`device` is 'cuda' but no CUDA device is available; use device='cpu' or 'auto'."
        raise ValueError(msg)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        msg = f"{_DEVICE_HELP}; got {device!r} but only {count} CUDA device(s) are present."
        raise ValueError(msg)
    return dev


def _is_scipy_sparse(x: Any) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a core dependency
        return False
    return sp.issparse(x)


def _complex_message(what: str, dtype: Any) -> str:
    return (
        f"{what} holds complex numbers (dtype {dtype}); neighbor embeddings need real "
        "values: pass the real part, the modulus or both as separate columns."
    )


def numeric_matrix(x: Any, what: str) -> torch.Tensor:
    """``x`` (tensor, numpy array or array-like) as a 2-D tensor of numbers, not yet cast.

    The shared first check of in-memory and streamed input; ``what`` names ``x`` in the
    messages (e.g. ``'`X`'``, ``'a chunk of `X`'``).

    Raises
    ------
    TypeError
        The values are not real numbers (strings, objects, complex numbers).
    ValueError
        ``x`` is not 2-D.
    """
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
        if not (np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.bool_)):
            msg = f"{what} must hold numbers; got an array of dtype {x.dtype}."
            raise TypeError(msg)
        if np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(_complex_message(what, x.dtype))
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif x.is_complex():
        raise TypeError(_complex_message(what, x.dtype))
    if x.ndim != 2:
        msg = f"{what} must be 2-D (n_samples, n_features); got shape {tuple(x.shape)}."
        raise ValueError(msg)
    return x


def as_float_tensor(
    x: Any,
    *,
    device: torch.device,
    name: str = "X",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Validate a 2-D data matrix and return it as a float tensor on ``device``.

    Parameters
    ----------
    x
        numpy array, torch tensor or array-like of shape ``(n_samples, n_features)``.
    device
        Target device.
    name
        Name used in error messages.
    dtype
        Force a dtype; by default float64 stays float64 and everything else is float32.

    Raises
    ------
    TypeError
        For scipy sparse input (densify a small representation such as PCA first).
    ValueError
        For input that is not 2-D, is empty, or holds NaN / inf.
    """
    if _is_scipy_sparse(x):
        msg = (
            f"`{name}` is a scipy sparse matrix; neighbor embeddings need a dense "
            "representation: compute PCA first (e.g. sc.pp.pca) and pass that, or call "
            ".toarray() if the matrix is small."
        )
        raise TypeError(msg)
    x = numeric_matrix(x, f"`{name}`")
    if x.shape[0] == 0 or x.shape[1] == 0:
        msg = f"`{name}` is empty; got shape {tuple(x.shape)}."
        raise ValueError(msg)
    if dtype is None:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.detach().to(device=device, dtype=dtype)
    check_finite_rows(x, name)
    return x.contiguous()


def to_output(z: torch.Tensor, like: Any) -> Any:
    """Return ``z`` in the format of the user's input ``like``.

    torch input -> detached tensor on the input's device, float64 for float64 input and
    float32 otherwise (half-precision and integer input were computed in float32);
    anything else -> numpy float32 (float64 if the input was float64).
    """
    z = z.detach()
    if isinstance(like, torch.Tensor):
        keep = like.dtype in (torch.float32, torch.float64)
        out_dtype = like.dtype if keep else torch.float32
        return z.to(device=like.device, dtype=out_dtype)
    out = z.cpu().numpy()
    in_dtype = getattr(like, "dtype", None)
    if in_dtype is not None and np.dtype(in_dtype) == np.float64:
        return out.astype(np.float64, copy=False)
    return out.astype(np.float32, copy=False)


def check_n_jobs(n_jobs: int | None) -> None:
    """Raise unless ``n_jobs`` is ``None`` or a non-zero int (joblib's convention)."""
    if n_jobs is None:
        return
    if not isinstance(n_jobs, (int, np.integer)) or isinstance(n_jobs, bool) or n_jobs == 0:
        msg = (
            f"`n_jobs` must be None, a positive int or a negative one (-1: all cores); "
            f"got {n_jobs!r}."
        )
        raise ValueError(msg)


@contextmanager
def cpu_threads(n_jobs: int | None) -> Iterator[None]:
    """Run the block with ``n_jobs`` torch CPU threads, restoring torch's setting afterwards.

    ``-1`` means all cores, ``-2`` all but one, and so on (joblib's convention). ``None``
    applies the contention policy of :func:`torchdr_sc._threads.free_core_threads`: torch's
    setting, lowered to the cores other processes leave free (unless ``OMP_NUM_THREADS`` is
    set). An explicit ``n_jobs`` is kept by the estimators' own policy blocks inside.
    """
    check_n_jobs(n_jobs)
    if n_jobs is None:
        with free_core_threads():
            yield
        return
    cores = usable_cores()
    wanted = int(n_jobs) if n_jobs > 0 else max(1, cores + 1 + int(n_jobs))
    before = torch.get_num_threads()
    torch.set_num_threads(wanted)
    try:
        with decided_threads():
            yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Run the block on one torch thread when ``device`` is the CPU (no change elsewhere).

    For products whose inner dimension is long and whose output is small, such as a
    ``d x d`` scatter matrix ``X^T X`` over many rows: the BLAS library splits that inner
    sum between threads, so the last bits of the result change with the thread count. On
    one thread they do not, at a cost linear in the rows.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
