"""All-or-nothing writes into an AnnData.

The layer computes everything first and then writes every result in one step through
:func:`commit`. If a write fails (or is interrupted), the values written so far are put
back, so ``obsm``, ``obsp`` and ``uns`` are exactly as they were before the call.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anndata import AnnData

_MISSING = object()


@dataclass
class Changes:
    """Values to write, per AnnData slot (``obs`` columns, ``obsm``, ``obsp``, ``varm``,
    ``uns``)."""

    obs: dict[str, Any] = field(default_factory=dict)
    obsm: dict[str, Any] = field(default_factory=dict)
    obsp: dict[str, Any] = field(default_factory=dict)
    varm: dict[str, Any] = field(default_factory=dict)
    uns: dict[str, Any] = field(default_factory=dict)
    notes: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, slot: str, key: str, value: Any, note: str = "") -> None:
        """Schedule ``adata.<slot>[key] = value``; ``note`` describes it in the log."""
        getattr(self, slot)[key] = value
        self.notes[(slot, key)] = note

    def items(self) -> list[tuple[str, str, Any]]:
        """``(slot, key, value)`` for every change."""
        return [
            (slot, key, value)
            for slot in ("obs", "obsm", "obsp", "varm", "uns")
            for key, value in getattr(self, slot).items()
        ]

    def summary(self) -> str:
        """scanpy-style ``deep`` text listing what is added, e.g. for the log."""
        lines = ["added"]
        for slot, key, _ in self.items():
            note = self.notes.get((slot, key))
            text = f"{key!r}, {note}" if note else repr(key)
            lines.append(f"    {text} (adata.{slot})")
        return "\n".join(lines)


def _implicit_warning() -> type[Warning]:
    try:
        from anndata import ImplicitModificationWarning
    except ImportError:  # pragma: no cover - anndata < 0.8
        return UserWarning
    return ImplicitModificationWarning


def commit(adata: AnnData, changes: Changes) -> None:
    """Write ``changes`` into ``adata``; on any failure restore the previous values.

    A view is turned into an actual AnnData by the first write, as scanpy's own tools do
    (the ``ImplicitModificationWarning`` this raises is silenced: writing into the object
    you passed is what ``copy=False`` asks for).

    Parameters
    ----------
    adata
        Target object (modified in place).
    changes
        The values to write.
    """
    done: list[tuple[str, str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _implicit_warning())
        try:
            for slot, key, value in changes.items():
                mapping = getattr(adata, slot)
                old = mapping[key] if key in mapping else _MISSING
                done.append((slot, key, old))
                mapping[key] = value
        except BaseException:
            for slot, key, old in reversed(done):
                mapping = getattr(adata, slot)
                if old is _MISSING:
                    if key in mapping:
                        del mapping[key]
                else:
                    mapping[key] = old
            raise
