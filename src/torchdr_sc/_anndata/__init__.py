"""Shared helpers of the AnnData layer (``tl``, ``pp``): representation choice, keys,
parameter serialisation, the affinity cache, all-or-nothing writes and scanpy-style logging.

Nothing here is algorithm code: the computation is done by :mod:`torchdr_sc.estimators`.
"""

from ._run import Method, build_estimator, package_version, run_embedding

__all__ = ["Method", "build_estimator", "package_version", "run_embedding"]
