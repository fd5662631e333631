"""Memory budgets of the streamed paths (bytes of float32)."""

#: Rows read at once from an on-disk matrix: about this many bytes of float32.
CHUNK_BYTES = 64 * 2**20
#: The exact torch search queries blocks of rows of about this many bytes of float32.
QUERY_BYTES = 256 * 2**20
#: Bytes of one block of query x chunk distances in the exact torch search.
SCORE_BYTES = 64 * 2**20
#: Above this many features, PCA is fitted on the first :data:`PCA_SVD_ROWS` rows (as the
#: in-memory initialisation does) instead of the full covariance.
PCA_EXACT_MAX_FEATURES = 2048
PCA_SVD_ROWS = 20_000


# --------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------
