"""Memory budgets of the streamed paths (bytes of float32).

The PCA limits are the in-memory initialisation's, declared in
:mod:`torchdr_sc.initialization` and re-exported here so that the streamed PCA reads them
at call time from this one module.
"""

from ..initialization import PCA_EXACT_MAX_FEATURES, PCA_SVD_ROWS

__all__ = ["CHUNK_BYTES", "PCA_EXACT_MAX_FEATURES", "PCA_SVD_ROWS", "QUERY_BYTES", "SCORE_BYTES"]

#: Rows read at once from an on-disk matrix: about this many bytes of float32.
CHUNK_BYTES = 64 * 2**20
#: The exact torch search queries blocks of rows of about this many bytes of float32.
QUERY_BYTES = 256 * 2**20
#: Bytes of one block of query x chunk distances in the exact torch search.
SCORE_BYTES = 64 * 2**20
