"""Parameters that can be stored in ``adata.uns`` and survive ``write_h5ad`` / ``write_zarr``.

anndata writes str-keyed dicts of Python / numpy scalars, strings and numpy arrays. It
fails on tuples, tensors, ``RandomState`` objects and int keys, and stringifies mixed lists
(see notes/scverse-conventions.md section 3.2). :func:`to_uns` converts a parameter dict to
that subset, dropping ``None`` values as scanpy's ``tl.tsne`` does.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def _name_of(value: Any) -> str:
    module = getattr(value, "__module__", None)
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    return f"{module}.{name}" if module else str(name)


def _sequence(value: list | tuple) -> Any:
    items = [to_uns_value(v) for v in value if v is not None]
    if all(isinstance(v, bool | np.bool_) for v in items):
        return np.asarray(items, dtype=bool)
    if all(isinstance(v, numbers.Number) for v in items):
        return np.asarray(items)
    if all(isinstance(v, str) for v in items):
        return np.asarray(items, dtype=object)
    return str(value)


def to_uns_value(value: Any) -> Any:
    """One value converted to a type anndata writes (``None`` is returned unchanged).

    Scalars stay scalars, numpy arrays stay arrays, dicts are converted recursively (with
    str keys), lists and tuples become arrays when homogeneous (else their ``str``),
    classes and functions become their qualified name, tensors become numpy arrays, and
    anything else its ``repr``.
    """
    if value is None or isinstance(value, str | bool | np.bool_):
        return value
    if isinstance(value, numbers.Number):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, np.ndarray):
        return value if value.dtype != object else np.asarray(value, dtype=str)
    if isinstance(value, dict):
        return to_uns(value)
    if isinstance(value, list | tuple):
        return _sequence(value)
    if type(value).__module__.startswith("torch"):
        if hasattr(value, "detach"):
            return value.detach().cpu().numpy()
        return str(value)  # torch.device, torch.dtype
    if isinstance(value, type) or callable(value):
        return _name_of(value)
    return repr(value)


def to_uns(params: dict[Any, Any]) -> dict[str, Any]:
    """A copy of ``params`` that survives ``write_h5ad`` and ``write_zarr``.

    Keys become str (a ``/`` is replaced, since anndata reads it as nesting), ``None``
    values are dropped, and every value goes through :func:`to_uns_value`.
    """
    out: dict[str, Any] = {}
    for key, value in params.items():
        converted = to_uns_value(value)
        if converted is None:
            continue
        out[str(key).replace("/", "_")] = converted
    return out
