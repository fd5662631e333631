"""Tools: neighbor embeddings of the cells of an AnnData, written the way scanpy does.

Each function chooses the representation (``use_rep`` / ``n_pcs``), runs an estimator of
:mod:`torchdr_sc.estimators` and writes ``obsm['X_<method>']`` and ``uns['<method>']``, so
that ``sc.pl.umap``, ``sc.pl.tsne`` and ``sc.pl.embedding`` plot the result.
"""

from ._tsne import infotsne, largevis, tsne, tsnekhorn
from ._umap import umap

__all__ = ["infotsne", "largevis", "tsne", "tsnekhorn", "umap"]
