"""The AnnData plumbing shared by ``tl``, ``pp`` and the atlas job (no algorithm code).

The computation is done by :mod:`torchdr_sc.estimators`; this package turns an AnnData into
their input and their results into scanpy's layout. Its public modules, one job each:

- :mod:`~torchdr_sc.adata.run`: :func:`run_embedding`, the one code path behind every ``tl``
  function;
- :mod:`~torchdr_sc.adata.options`: scanpy's names of estimator parameters
  (:class:`ScanpyNames`), the checked ``**kwargs`` of a ``tl`` call with suggestions for
  unknown keywords, and :func:`build_estimator`;
- :mod:`~torchdr_sc.adata.keys`: the default ``obsm`` / ``uns`` keys (scanpy's preset);
- :mod:`~torchdr_sc.adata.representation`: ``use_rep`` / ``n_pcs`` (scanpy's rule) and the
  fingerprint of a representation;
- :mod:`~torchdr_sc.adata.stored_graph`: a kNN graph stored by ``pp.neighbors`` /
  ``sc.pp.neighbors`` (keys, reading, reuse);
- :mod:`~torchdr_sc.adata.cache`: the input affinity cached in ``obsp`` and described in
  ``uns['tdr_affinities']``;
- :mod:`~torchdr_sc.adata.uns`: parameters converted to what ``write_h5ad`` / ``write_zarr``
  store;
- :mod:`~torchdr_sc.adata.changes`: all-or-nothing writes;
- :mod:`~torchdr_sc.adata.log`: scanpy-style log lines.
"""

from . import cache, log
from .changes import Changes, commit
from .keys import output_keys
from .options import ScanpyNames, build_estimator, estimator_options, suggestions
from .representation import (
    Representation,
    check_key,
    check_str,
    choose_representation,
    fingerprint,
    streamed_fingerprint,
)
from .run import (
    GraphUse,
    Method,
    in_memory_copy,
    package_version,
    results_changes,
    run_embedding,
)
from .stored_graph import (
    GraphChoice,
    StoredGraph,
    choose_graph,
    graph_keys,
    knn_for,
    read_graph,
)
from .uns import to_uns, to_uns_value

__all__ = [
    "Changes",
    "GraphChoice",
    "GraphUse",
    "Method",
    "Representation",
    "ScanpyNames",
    "StoredGraph",
    "build_estimator",
    "cache",
    "check_key",
    "check_str",
    "choose_graph",
    "choose_representation",
    "commit",
    "estimator_options",
    "fingerprint",
    "graph_keys",
    "in_memory_copy",
    "knn_for",
    "log",
    "output_keys",
    "package_version",
    "read_graph",
    "results_changes",
    "run_embedding",
    "streamed_fingerprint",
    "suggestions",
    "to_uns",
    "to_uns_value",
]
