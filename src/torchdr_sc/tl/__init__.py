"""Tools: neighbor embeddings of the cells of an AnnData, written the way scanpy does.

Each function takes its scanpy counterpart's parameters (``tl.umap`` those of
``sc.tl.umap``, the t-SNE family those of ``sc.tl.tsne``; ``tl.pacmap``, which scanpy
lacks, ``sc.tl.tsne``'s shape), chooses the representation
(``use_rep`` / ``n_pcs``), runs an estimator of :mod:`torchdr_sc.estimators` and writes
``obsm['X_<method>']`` and ``uns['<method>']``, so that ``sc.pl.umap``, ``sc.pl.tsne`` and
``sc.pl.embedding`` plot the result. :func:`cached_affinities` and :func:`clear_cache` show
and remove the affinity cache (``cache=True``); :func:`ingest` places new cells on a
reference's embeddings.
"""

from ._cache import cached_affinities, clear_cache
from ._ingest import ingest
from ._pacmap import pacmap
from ._tsne import infotsne, largevis, tsne, tsnekhorn
from ._umap import umap

__all__ = [
    "cached_affinities",
    "clear_cache",
    "infotsne",
    "ingest",
    "largevis",
    "pacmap",
    "tsne",
    "tsnekhorn",
    "umap",
]
