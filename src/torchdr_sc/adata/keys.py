"""The ``obsm`` / ``uns`` keys a ``tl`` function writes by default.

scanpy 1.x writes ``obsm['X_umap']`` / ``uns['umap']`` (and ``X_tsne`` / ``tsne``). scanpy
1.13 adds a settings preset (``sc.settings.preset``): under ``Preset.ScanpyV2Preview`` the
default keys of UMAP and t-SNE become ``obsm['umap']`` / ``obsm['tsne']``, and ``sc.pl.umap``
reads those. The keys written here follow the installed scanpy's active preset, so the keys
``sc.pl.umap`` / ``sc.pl.tsne`` read are the keys written. scanpy is only consulted when it
is already imported (a user who never imported it plots with nothing that reads a preset).
"""

from __future__ import annotations

import sys
from typing import Any

#: Methods whose default keys scanpy's presets define.
SCANPY_EMBEDDINGS = ("umap", "tsne")


def _preset_key(method: str) -> str | None:
    """The key the active scanpy preset gives ``method``'s embedding, or ``None`` (1.x)."""
    scanpy: Any = sys.modules.get("scanpy")
    if scanpy is None or method not in SCANPY_EMBEDDINGS:
        return None
    preset = getattr(getattr(scanpy, "settings", None), "preset", None)
    key = getattr(getattr(preset, method, None), "key_added", None)
    return key if isinstance(key, str) else None


def output_keys(method: str, key_added: str | None) -> tuple[str, str]:
    """``(obsm key, uns key)`` of a ``tl`` function's result.

    Parameters
    ----------
    method
        The ``tl`` function's name, e.g. ``'umap'``.
    key_added
        The user's key: both keys when given (scanpy's rule).
    """
    if key_added is not None:
        return key_added, key_added
    preset = _preset_key(method)
    if preset is not None:
        return preset, preset
    return f"X_{method}", method
