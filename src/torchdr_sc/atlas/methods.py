"""The methods of ``torchdr-sc embed`` and ``torchdr-sc demo`` (plain data, no import).

The command line reads them to build its parsers, so this module imports nothing: ``--help``
and argument errors answer without loading torch or scanpy.
"""

from __future__ import annotations

#: Method name -> (``tl`` function name, estimator class name, label), in ``--help`` order.
METHODS: dict[str, tuple[str, str, str]] = {
    "umap": ("umap", "UMAP", "UMAP"),
    "tsne": ("tsne", "TSNE", "t-SNE"),
    "infotsne": ("infotsne", "InfoTSNE", "InfoTSNE"),
    "largevis": ("largevis", "LargeVis", "LargeVis"),
    "tsnekhorn": ("tsnekhorn", "TSNEkhorn", "TSNEkhorn"),
}
#: Methods whose work is sharded across processes (TSNEkhorn's dense affinity is not).
SHARDED = ("infotsne", "largevis", "tsne", "umap")
