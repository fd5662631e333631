"""Reading the input and writing the output of ``torchdr-sc embed`` without loading ``X``.

The input (``.h5ad`` or ``.zarr``) is only ever opened read-only. What the embedding needs
is read element by element with anndata's element reader: ``obs``, ``var``, ``obsm``,
``obsp`` and ``uns`` form a "skeleton" AnnData without ``X``; ``X`` itself stays on disk and
is streamed by row chunks when it is the representation embedded.

The output is the input plus the new elements. When both have the same format, the input is
copied byte for byte (``X``, layers and everything else never pass through memory) and the
new elements are written into the copy with anndata's element writer; a change of format
reads the whole input into memory and writes it anew. Either way the output is written
under a temporary name next to its destination and renamed at the end, so a failed job
never leaves a partial output.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = {".h5ad": "h5ad", ".zarr": "zarr"}


class InputError(ValueError):
    """A problem with the command's input or options, reported before any work."""


def file_format(path: str | os.PathLike, what: str) -> str:
    """``'h5ad'`` or ``'zarr'`` from the path's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        msg = f"{what} {str(path)!r} must end in .h5ad or .zarr; got {suffix or 'no suffix'!r}."
        raise InputError(msg)
    return FORMATS[suffix]


@contextmanager
def open_store(path: str | os.PathLike, what: str = "INPUT") -> Iterator[Any]:
    """The root group of an .h5ad (h5py) or .zarr store, opened read-only (``what`` names the
    file in error messages)."""
    fmt = file_format(path, what)
    path = Path(path)
    if not path.exists():
        msg = f"{what} {str(path)!r} does not exist."
        raise InputError(msg)
    try:
        if fmt == "h5ad":
            import h5py

            store = h5py.File(path, "r")
        else:
            import zarr

            store = zarr.open_group(str(path), mode="r")
    except Exception as err:
        kind = "an HDF5 (.h5ad)" if fmt == "h5ad" else "a zarr (.zarr)"
        why = f"{type(err).__name__}: {err}"
        msg = f"cannot read {what} {str(path)!r}: it is not {kind} file ({why})."
        raise InputError(msg) from err
    try:
        yield store
    finally:
        if fmt == "h5ad":
            store.close()


def _damaged(path: str | os.PathLike, err: BaseException, what: str = "INPUT") -> str:
    why = f"{type(err).__name__}: {err}"
    return f"cannot read {what} {str(path)!r}: the file is damaged ({why})."


def _is_group(node: Any) -> bool:
    return not hasattr(node, "shape") or hasattr(node, "keys")


def _shape(node: Any) -> tuple[int, ...]:
    """Shape of a stored array, sparse matrix or data frame."""
    import numpy as np

    if not _is_group(node):
        return tuple(int(s) for s in node.shape)
    attrs = dict(node.attrs)
    if "shape" in attrs:
        return tuple(int(s) for s in np.ravel(attrs["shape"]))
    if attrs.get("encoding-type") == "dataframe":
        index = node[str(attrs["_index"])]
        return (int(index.shape[0]), len(np.ravel(attrs.get("column-order", []))))
    return ()


@dataclass(frozen=True)
class InputInfo:
    """What the launcher learns about the input without reading the data.

    Attributes
    ----------
    path
        The input path.
    format
        ``'h5ad'`` or ``'zarr'``.
    n_obs, n_vars
        Numbers of cells and variables.
    obsm
        ``obsm`` keys and their shapes.
    has_x
        Whether ``X`` is stored.
    uns
        The top-level ``uns`` keys.
    """

    path: str
    format: str
    n_obs: int
    n_vars: int
    obsm: dict[str, tuple[int, ...]]
    has_x: bool
    uns: tuple[str, ...] = ()


def inspect_input(path: str | os.PathLike, what: str = "INPUT") -> InputInfo:
    """Open the input read-only and describe it; a corrupt or foreign file is an InputError
    (``what`` names the file in its message)."""
    with open_store(path, what) as store:
        try:
            keys = set(store.keys())
            if "obs" not in keys or "var" not in keys:
                msg = (
                    f"{what} {str(path)!r} is not an AnnData file (it has no 'obs' and 'var'); "
                    "write it with anndata's write_h5ad / write_zarr."
                )
                raise InputError(msg)
            n_obs = _shape(store["obs"])[0]
            n_vars = _shape(store["var"])[0]
            obsm = {}
            if "obsm" in keys:
                obsm = {str(k): _shape(store["obsm"][k]) for k in store["obsm"].keys()}
            uns = tuple(str(k) for k in store["uns"].keys()) if "uns" in keys else ()
        except InputError:
            raise
        except Exception as err:
            raise InputError(_damaged(path, err, what)) from err
        fmt = file_format(path, what)
        return InputInfo(str(path), fmt, n_obs, n_vars, obsm, "X" in keys, uns)


def _elem_io() -> tuple[Any, Any, Any]:
    try:
        from anndata.io import read_elem, sparse_dataset, write_elem
    except ImportError:  # pragma: no cover - anndata < 0.11
        from anndata.experimental import read_elem, sparse_dataset, write_elem
    return read_elem, write_elem, sparse_dataset


@contextmanager
def open_skeleton(path: str | os.PathLike) -> Iterator[tuple[Any, Any]]:
    """``(adata, X)``: the input without ``X`` in memory, and ``X`` left on disk.

    ``X`` is an h5py / zarr array or anndata's backed sparse matrix (``None`` if absent),
    valid inside the ``with`` block.
    """
    import anndata as ad

    read_elem, _, sparse_dataset = _elem_io()
    with open_store(path) as store:
        try:
            parts = {
                key: read_elem(store[key])
                for key in ("obs", "var", "obsm", "obsp", "uns")
                if key in store.keys()
            }
            adata = ad.AnnData(**parts)
            x = store["X"] if "X" in store.keys() else None
            if x is not None and _is_group(x):
                x = sparse_dataset(x)
        except Exception as err:
            raise InputError(_damaged(path, err)) from err
        yield adata, x


def temporary_sibling(path: Path) -> Path:
    """A fresh name in ``path``'s folder for writing before the final rename."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def staging_path(target: str | os.PathLike) -> Path:
    """Where a job on several processes writes its output before the launcher commits it.

    A hidden sibling of ``target`` with the same suffix (so the same format), e.g.
    ``.out.staged-1a2b3c4d.h5ad``.
    """
    target = Path(target)
    return target.with_name(f".{target.stem}.staged-{uuid.uuid4().hex[:8]}{target.suffix}")


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file or a folder (a zarr store) if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def commit_staged(
    staging: str | os.PathLike, target: str | os.PathLike, *, overwrite: bool
) -> None:
    """Move the staged output to ``target`` (replacing it only with ``overwrite``).

    Raises
    ------
    InputError
        ``target`` appeared meanwhile and ``overwrite`` is not set.
    """
    staging, target = Path(staging), Path(target)
    if target.exists() or target.is_symlink():
        if not overwrite:
            msg = f"OUTPUT {str(target)!r} exists; pass --overwrite to replace it."
            raise InputError(msg)
        remove_path(target)
    os.replace(staging, target)


def write_output(
    source: str | os.PathLike,
    target: str | os.PathLike,
    changes: list[tuple[str, str, Any]],
    *,
    overwrite: bool,
) -> None:
    """Write the input plus ``changes`` (``(slot, key, value)``) to ``target``, atomically.

    Parameters
    ----------
    source
        The input file (only read).
    target
        The output file (``.h5ad`` or ``.zarr``).
    changes
        New or replaced ``obsm`` / ``obsp`` / ``uns`` elements.
    overwrite
        Replace an existing ``target``; otherwise an existing target is an InputError.
    """
    source, target = Path(source), Path(target)
    if target.exists() and not overwrite:
        msg = f"OUTPUT {str(target)!r} exists; pass --overwrite to replace it."
        raise InputError(msg)
    src_fmt, dst_fmt = file_format(source, "INPUT"), file_format(target, "OUTPUT")
    tmp = temporary_sibling(target)
    try:
        if src_fmt == dst_fmt:
            _copy_and_add(source, tmp, dst_fmt, changes)
        else:
            _convert(source, tmp, dst_fmt, changes)
        if target.exists():
            remove_path(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            remove_path(tmp)


def _copy_and_add(source: Path, tmp: Path, fmt: str, changes: list) -> None:
    _, write_elem, _ = _elem_io()
    if fmt == "h5ad":
        import h5py

        shutil.copyfile(source, tmp)
        root = h5py.File(tmp, "r+")
    else:
        import zarr

        shutil.copytree(source, tmp)
        consolidated = (tmp / ".zmetadata").exists() or (tmp / "zarr.json").exists()
        # zarr 2 opens a group without its consolidated metadata and has no such keyword.
        fresh = {} if zarr.__version__.startswith("2.") else {"use_consolidated": False}
        root = zarr.open_group(str(tmp), mode="r+", **fresh)
    try:
        for slot, key, value in changes:
            if slot not in root.keys():
                write_elem(root, slot, {})
            group = root[slot]
            if key in group.keys():
                del group[key]
            write_elem(group, key, value)
    finally:
        if fmt == "h5ad":
            root.close()
    if fmt == "zarr" and consolidated:  # keep the copy's metadata index up to date
        zarr.consolidate_metadata(str(tmp))


def _convert(source: Path, tmp: Path, fmt: str, changes: list) -> None:
    import anndata as ad

    reader = ad.read_h5ad if file_format(source, "INPUT") == "h5ad" else ad.read_zarr
    adata = reader(source)
    for slot, key, value in changes:
        getattr(adata, slot)[key] = value
    if fmt == "h5ad":
        adata.write_h5ad(tmp)
    else:
        adata.write_zarr(tmp)
