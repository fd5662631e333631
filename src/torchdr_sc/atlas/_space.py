"""Room for the output: free space checked before the work, write failures in one line.

A full disk found only while the HDF5 writer runs costs the whole job and, inside HDF5,
can end the process itself. So the command line estimates the size of what it will write
(:func:`estimated_output_bytes`: the input copied plus the new elements), checks the free
space of the output's folder before any work (:func:`check_free_space`), and converts any
failure of the writer (no space, no permission, an I/O error) into :class:`OutputError`, one
line with the reason, after which no partial file is left (:func:`reporting_write_errors`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

#: Added to every estimate: HDF5 / zarr metadata, ``uns`` entries, the temporary copy's slack.
OVERHEAD_BYTES = 16 * 2**20
#: Factor on the estimate (compression is not assumed, chunking wastes a little).
SAFETY = 1.1


class OutputError(Exception):
    """The output could not be written (exit status 1; the message is one line)."""


def path_bytes(path: str | os.PathLike) -> int:
    """Size of a file, or of every file under a folder (a ``.zarr`` store)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def estimated_output_bytes(source: str | os.PathLike | None, new_bytes: int) -> int:
    """Bytes the output will take: the input (copied into it, when there is one) plus
    ``new_bytes`` of new elements, with a margin.

    Parameters
    ----------
    source : path-like or None
        The input file copied into the output.
    new_bytes : int
        Size of the new elements (embeddings, affinities, labels).

    Returns
    -------
    int
    """
    copied = 0 if source is None else path_bytes(source)
    return int(SAFETY * (copied + new_bytes)) + OVERHEAD_BYTES


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def check_free_space(target: str | os.PathLike, needed: int, what: str = "OUTPUT") -> None:
    """Raise :class:`OutputError` unless the folder of ``target`` has ``needed`` bytes free.

    Parameters
    ----------
    target : path-like
        The output path (its folder must exist).
    needed : int
        Bytes the output needs.
    what : str, default='OUTPUT'
        How the message names the output.

    Raises
    ------
    OutputError
    """
    folder = Path(target).resolve().parent
    free = shutil.disk_usage(folder).free
    if free < needed:
        msg = (
            f"not enough free space for {what} {str(target)!r}: about {_gb(needed)} needed, "
            f"{_gb(free)} free in {str(folder)!r}. Free some space or write elsewhere."
        )
        raise OutputError(msg)


def _reason(err: BaseException) -> str:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:  # the root cause names the errno
        seen.add(id(current))
        code = getattr(current, "errno", None)
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EIO):
            return os.strerror(code)
        current = current.__cause__ or current.__context__
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


@contextlib.contextmanager
def reporting_write_errors(target: str | os.PathLike, what: str = "OUTPUT") -> Iterator[None]:
    """Turn a failure of the writer inside the block into a one-line :class:`OutputError`.

    The block must remove its own partial files (the writers here write to a temporary name
    and remove it when they fail).
    """
    try:
        yield
    except OutputError:
        raise
    except (OSError, RuntimeError) as err:  # h5py and zarr report I/O failures as these
        msg = f"could not write {what} {str(target)!r}: {_reason(err)}; nothing was written."
        raise OutputError(msg) from err
