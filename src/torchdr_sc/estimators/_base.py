"""Shared base of the neighbor-embedding estimators.

Parameters are declared once, as dataclass fields of :class:`Embedder`; a method declares
only its own parameters (or a different default) in its subclass. sklearn's ``get_params``,
``set_params`` and ``clone`` work because the dataclass ``__init__`` lists every field.

``fit_transform`` runs the same pipeline for every method::

    check parameters -> data to tensor -> kNN -> input affinity P -> init -> optimise

and records ``timings_`` (seconds per stage), ``affinity_in_`` (the sparse P, reusable),
``n_iter_`` and ``embedding_``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator

from .._device import to_output
from .._logging import get_logger, verbosity
from .._random import make_generator, resolve_seed
from .._threads import recheck_threads, thread_policy
from .._validation import check_enough_samples, check_number, check_option
from ..affinity import SparseAffinity
from ..distributed import DistContext, is_rank_zero, resolve_distributed
from ..initialization import INIT_NAMES, check_init_array
from ..knn import METRICS, KNNGraph, check_backend
from ..optimize import OptimizeResult
from ..progress import Progress, reporting, stage
from ..streaming import fit_streamed, is_streamed
from ._schedule import check_optimization
from ._stages import (
    KEEP_KNN_MAX_BYTES,
    affinity_text,
    check_finite_embedding,
    convert_metric,
    init_text,
    initial_embedding,
    knn_nbytes,
    prepare_input,
    require_data_in_memory,
    search_knn,
    start_kernel_builds,
)

logger = get_logger(__name__)

#: Largest n for which the dense n x n methods (TSNEkhorn, AffinityMatcher) are allowed.
MAX_DENSE_SAMPLES = 15_000


@dataclass(kw_only=True, eq=False, repr=False)
class Embedder(BaseEstimator):
    """Parameters and pipeline shared by every neighbor embedding.

    Parameters
    ----------
    n_components
        Dimension of the embedding.
    lr
        Learning rate, or ``'auto'`` (method-specific rule).
    optimizer
        A name of ``torchdr_sc.optimize.OPTIMIZERS`` (the ``torch.optim`` optimisers
        whose ``step()`` needs no closure, and ``'DeltaBarDelta'``, SGD with gains, see
        :class:`~torchdr_sc.optimize.DeltaBarDelta`) or a ``torch.optim.Optimizer``
        subclass (the class; its arguments go in ``optimizer_kwargs``). ``'LBFGS'`` and
        other closure-based optimisers are refused: the loop computes gradients only.
    optimizer_kwargs
        Arguments of the optimiser; ``'auto'`` sets SGD momentum per phase (0.5 during early
        exaggeration, then 0.8) for the t-SNE family and no momentum for UMAP-style SGD.
    scheduler
        ``None`` / ``'constant'`` (no schedule), ``'linear'`` (linear decay to 0), a name
        of ``torchdr_sc.optimize.SCHEDULERS`` or a
        ``torch.optim.lr_scheduler.LRScheduler`` subclass whose ``step()`` takes no
        arguments (``ReduceLROnPlateau`` needs the loss and is refused). UMAP-style
        methods decay the rate linearly by default (``scheduler='linear'``).
    scheduler_kwargs
        Arguments of the scheduler. Bad values of these four parameters raise a
        ValueError or TypeError naming the parameter when the fit starts, before any
        computation (the optimiser and scheduler are built once on a dummy tensor to
        check the arguments the user chose).
    init
        ``'pca'``, ``'spectral'``, ``'normal'`` (``'random'``) or an array ``(n, n_components)``.
    init_scaling
        Standard deviation of the first coordinate of the initial embedding.
    max_iter
        Number of iterations (epochs for negative-sampling methods); ``None``: method default.
    min_grad_norm
        Stop when the gradient norm falls below this (checked every ``check_interval``).
    early_exaggeration_coeff, early_exaggeration_iter
        Multiplier of the attraction and length of the first phase.
    metric_in
        Metric of the input space: 'sqeuclidean', 'euclidean', 'cosine' or 'manhattan'.
    metric_out
        Metric of the embedding space (only 'sqeuclidean').
    tol_affinity, max_iter_affinity
        Precision and iterations of the affinity calibration.
    sparsity
        Compute P on a kNN graph (``True``) - the only mode of the sparse methods.
    device
        ``'auto'`` (torch input keeps its device, otherwise CUDA when available), 'cpu', 'cuda'.
    backend
        kNN backend: 'auto', 'torch' (``None`` is the same), 'faiss' or 'keops'.
    random_state
        Seed (int), numpy RandomState / Generator, or ``None``.
    verbose
        Log progress on stderr.
    check_interval
        Iterations between convergence checks (each one waits for the device).
    compile
        How the hot loops run. For the negative-sampling methods (UMAP, LargeVis),
        ``'auto'`` (default) runs each epoch's pair terms as a C loop on CPU, built once
        per machine (about a second) with the system's C compiler into
        ``~/.cache/torchdr_sc/kernels`` (or ``$TORCHDR_SC_CACHE_DIR``), at every size, and
        as one hand-written Triton kernel on CUDA when Triton is installed. ``True``
        compiles the epoch with :func:`torch.compile` instead (and raises if it cannot; it
        traces again in every process); ``False`` runs it eagerly. On CPU the three give the
        same embedding bit for bit (only the time differs), and a missing compiler is said
        once and costs time, not results. For the attraction over P's edges of TSNE,
        InfoTSNE and TSNEkhorn (FFT), ``'auto'`` is a C
        kernel built once per machine (the same bits as ``False``), and so is InfoTSNE's
        repulsion unless ``False``; SNE ignores it. With ``'auto'`` a fit starts building
        its kernels (the first time on a machine) beside its kNN search.
    distributed
        'auto' (use an initialised torch.distributed group), True (require one) or False.
    progress_bar
        Report progress on stderr (rank 0 only): a line when each stage starts (kNN
        search, input affinity, initialisation, optimisation) and its duration when it
        ends, and a tqdm bar (a widget in a notebook) over the optimisation, updated
        every iteration, and over the query blocks of the exact torch kNN search. See
        :mod:`torchdr_sc.progress`; ``tl`` functions turn it on by default in notebooks
        and for large runs in a terminal (:func:`~torchdr_sc.progress.default_progress`).

    Attributes
    ----------
    embedding_
        ``(n, n_components)`` tensor on the fit's device: ``n x n_components x 4`` bytes.
    reference_data_
        The data of the fit, ``(n, n_features)`` float32 (float64 for float64 input), kept
        for :meth:`transform` on the fit's device: ``n x n_features x 4`` bytes (a numpy
        float32 input on the CPU is shared, not copied).
        ``None`` after a fit without ``X`` (precomputed ``affinity`` / ``knn``, streamed input).
    affinity_in_
        The input affinity P (:class:`~torchdr_sc.affinity.SparseAffinity`): 20 bytes per
        edge (two int64 ids and a float32; 12 bytes with the int32 ids of the t-SNE
        family's symmetrised P), about ``1.5 n k`` edges.
    knn_
        The kNN graph (:class:`~torchdr_sc.knn.KNNGraph`, ``n x k x 12`` bytes), or ``None``:
        a graph the fit searched itself is kept up to ``KEEP_KNN_MAX_BYTES`` (about 1M
        cells x 15 neighbours) and freed beyond, once P is built (a graph of 90
        neighbours per cell would otherwise be held through the optimisation).
    device_used_, seed_, n_iter_, converged_, timings_
        The device, the seed (an int, also used by :meth:`transform`), the iterations run,
        whether the gradient norm fell below ``min_grad_norm``, seconds per stage.
    n_threads_, execution_path_
        CPU threads and path of the optimisation (``'epoch native'`` / ``'eager'`` /
        ``'compiled'`` / ``'triton'``; t-SNE: attraction and repulsion), where set.

    A fitted estimator pickles (``pickle``, ``joblib``) with its tensors on the CPU and loads
    them back on the fit's device, or on the CPU where that device is missing
    (:mod:`~torchdr_sc.estimators.persistence`).
    """

    n_components: int = 2
    lr: float | str = "auto"
    optimizer: Any = "SGD"
    optimizer_kwargs: Any = "auto"
    scheduler: Any = None
    scheduler_kwargs: dict | None = None
    init: Any = "pca"
    init_scaling: float = 1e-4
    max_iter: int | None = None
    min_grad_norm: float = 1e-7
    early_exaggeration_coeff: float | None = None
    early_exaggeration_iter: int | None = None
    metric_in: str = "sqeuclidean"
    metric_out: str = "sqeuclidean"
    tol_affinity: float = 1e-5
    max_iter_affinity: int = 200
    sparsity: bool = True
    device: Any = "auto"
    backend: str | None = "auto"
    random_state: Any = None
    verbose: bool = False
    check_interval: int = 50
    compile: bool | str = "auto"
    distributed: Any = "auto"
    progress_bar: bool = False

    #: What one iteration of the loop is called in progress reports.
    _iteration_unit: ClassVar[str] = "iterations"
    #: The objective whose C kernels a fit starts building before its kNN search.
    _objective_method: ClassVar[str | None] = None
    #: The fit's data (a tensor, or ``None`` without it) while ``_optimize`` runs.
    _fit_data: ClassVar[Any] = None

    # ---- to be provided by subclasses -------------------------------------------------
    def _check_method_params(self) -> None:
        """Validate the method's own parameters."""

    def _base_neighbours(self) -> int:
        """Neighbours (self excluded) needed from the kNN graph."""
        raise NotImplementedError

    def _min_samples_text(self) -> str:
        raise NotImplementedError

    def _affinity_from_knn(self, knn: KNNGraph) -> SparseAffinity:
        raise NotImplementedError

    def data_needed(self) -> tuple[str, str] | None:
        """``(why, other fix)`` when the optimisation reads the data itself (then ``fit``
        needs ``X`` in memory), else ``None``."""
        return None

    def affinity_params(self) -> dict[str, Any]:
        """Parameters that determine the input affinity (the cache key of the AnnData layer)."""
        raise NotImplementedError

    def _optimize(
        self, z0: torch.Tensor, P: SparseAffinity, ctx: DistContext, gen: torch.Generator
    ) -> OptimizeResult:
        raise NotImplementedError

    # ---- the public protocol (used by the AnnData layer, the atlas job, streaming) ------
    def initial_scaling(self) -> float:
        """Standard deviation of the first coordinate of the initial embedding."""
        return self.init_scaling

    def derived_params(self) -> dict[str, Any]:
        """Values derived from the parameters that a record of the run should hold.

        Empty here; UMAP adds its fitted ``a`` and ``b``.
        """
        return {}

    @property
    def uses_knn_graph(self) -> bool:
        """Whether P is computed on a kNN graph (``False``: from all pairs of the data).

        Methods with ``False`` cannot reuse a stored kNN graph nor read streamed input.
        """
        return not callable(getattr(type(self), "_affinity_from_data", None))

    def validate(self) -> None:
        """Validate every parameter; raises before any data is touched.

        Raises
        ------
        ValueError, TypeError
            A parameter out of its range or of the wrong type (the message names it).
        """
        check_number("n_components", self.n_components, kind=int, low=1, closed="left")
        if isinstance(self.lr, str):
            check_option("lr", self.lr, ["auto"])
        else:
            check_number("lr", self.lr, low=0)
        if self.max_iter is not None:
            check_number("max_iter", self.max_iter, kind=int, low=1, closed="left")
        check_number("max_iter_affinity", self.max_iter_affinity, kind=int, low=1, closed="left")
        check_number("min_grad_norm", self.min_grad_norm, low=0, closed="left")
        check_number("init_scaling", self.init_scaling, low=0)
        check_number("check_interval", self.check_interval, kind=int, low=1, closed="left")
        if self.early_exaggeration_coeff is not None:
            check_number("early_exaggeration_coeff", self.early_exaggeration_coeff, low=0)
        if self.early_exaggeration_iter is not None:
            check_number(
                "early_exaggeration_iter",
                self.early_exaggeration_iter,
                kind=int,
                low=0,
                closed="left",
            )
        check_backend(self.backend)
        check_option("metric_in", self.metric_in, METRICS)
        check_option("metric_out", self.metric_out, ["sqeuclidean"])
        check_option("distributed", self.distributed, ["auto", True, False])
        check_option("compile", self.compile, ["auto", True, False])
        if isinstance(self.init, str):
            check_option("init", self.init, INIT_NAMES)
        check_optimization(self)  # optimizer, scheduler and their kwargs, by contract
        self._check_method_params()

    def check_n_samples(self, n: int) -> None:
        """Check that the parameters fit ``n`` samples (neighbours, ``init`` array shape).

        Raises
        ------
        ValueError
            Too few samples for the neighbourhood asked for, or an ``init`` array of the
            wrong shape.
        """
        check_enough_samples(n, self.neighbours_needed(n), self._min_samples_text())
        if not isinstance(self.init, str):
            check_init_array(self.init, n, self.n_components)  # shape, real, finite

    def neighbours_needed(self, n: int) -> int:
        """Neighbours per sample (self excluded) the input affinity needs from a kNN graph."""
        return self._base_neighbours()

    def _default_max_iter(self, n: int) -> int:
        """Iterations when ``max_iter`` is ``None``."""
        return 1000

    def planned_iterations(self, n: int) -> int:
        """Iterations the optimisation of ``n`` samples runs unless it converges first."""
        return int(self.max_iter or self._default_max_iter(n))

    # ---- pipeline ---------------------------------------------------------------------
    def fit(self, X: Any = None, y: Any = None, **kwargs: Any) -> Embedder:
        """Compute the embedding (see :meth:`fit_transform`) and return the estimator."""
        self.fit_transform(X, y, **kwargs)
        return self

    def fit_transform(
        self,
        X: Any = None,
        y: Any = None,
        *,
        affinity: SparseAffinity | None = None,
        knn: KNNGraph | None = None,
    ) -> Any:
        """Embed ``X`` and return the embedding in the format of ``X``.

        Parameters
        ----------
        X
            Data ``(n_samples, n_features)``: numpy array (-> numpy float32 out) or torch
            tensor (-> tensor on its device). May be ``None`` when ``affinity`` or ``knn``
            is given and ``init`` does not need the data.
        y
            Ignored (sklearn compatibility).
        affinity
            A precomputed input affinity (e.g. read back from ``adata.obsp``): skips the
            kNN search and the affinity computation.
        knn
            A precomputed kNN graph (e.g. scanpy's ``obsp['distances']``): skips the search.
        """
        self.validate()
        require_data_in_memory(self, X)
        progress = Progress(type(self).__name__) if self.progress_bar and is_rank_zero() else None
        with verbosity(self.verbose and is_rank_zero()), reporting(progress):
            if is_streamed(X):  # DataLoader or on-disk matrix: read in chunks
                z, like = fit_streamed(self, X, affinity=affinity, knn=knn)
                return to_output(z, like)
            z = self.fit_embedding(X, affinity, knn)
        return to_output(z, X if X is not None else np.empty((0, 0), np.float32))

    @thread_policy
    def transform(self, X: Any, *, max_iter: int | None = None) -> Any:
        """Place new points on the fitted embedding, the reference held fixed.

        Their kNN among the reference data, their affinity rows calibrated as the fit's,
        a start at their neighbours' weighted mean position, then the method's objective
        against the fixed reference (openTSNE's and umap-learn's ``transform``; see
        :mod:`torchdr_sc.estimators.transform`). UMAP, LargeVis, InfoTSNE, TSNE and SNE.

        Parameters
        ----------
        X
            ``(m, n_features)`` new data in the representation of the fit: numpy (-> numpy
            float32 out) or torch (-> tensor on its device).
        max_iter
            Iterations (epochs); ``None``: 250 for TSNE / SNE / InfoTSNE, ``max_iter // 3``
            (100, or 30 above 10,000 new points, by default) for UMAP, LargeVis.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        ValueError
            ``X`` with other features than the fit's, or holding NaN / inf.
        NotImplementedError
            TSNEkhorn (its doubly stochastic P couples all points).
        """
        from .transform import transform_new

        return transform_new(self, X, max_iter=max_iter)

    def __getstate__(self) -> dict[str, Any]:
        from .persistence import portable_state

        return portable_state(super().__getstate__())

    def __setstate__(self, state: dict[str, Any]) -> None:
        from .persistence import restore_state

        super().__setstate__(restore_state(state))

    @thread_policy
    def fit_embedding(
        self,
        X: Any,
        affinity: SparseAffinity | None,
        knn: KNNGraph | None,
        init: Any = None,
    ) -> torch.Tensor:
        """Run the pipeline on in-memory input and return the embedding as a tensor.

        The step :meth:`fit_transform` and the streamed path share (the latter passes the
        kNN graph and the initial embedding it computed while reading the data).

        Parameters
        ----------
        X
            Data, or ``None`` when ``affinity`` or ``knn`` is given.
        affinity, knn
            Precomputed input affinity or kNN graph (see :meth:`fit_transform`).
        init
            Overrides the ``init`` parameter (e.g. a streamed PCA initialisation).
        """
        x, n, device = prepare_input(self, X, affinity, knn)
        self.device_used_ = device
        start_kernel_builds(self, device)
        ctx = resolve_distributed(self.distributed, n)
        dtype = x.dtype if x is not None else torch.float32
        timings = {"knn": 0.0, "affinity": 0.0, "optimize": 0.0, "init": 0.0}
        if affinity is None:
            affinity, knn = self._input_affinity(x, knn, ctx, timings)
        else:
            affinity = affinity.to(device)
            if affinity.n != n:
                msg = f"`affinity` is for {affinity.n} samples but the data has {n} rows."
                raise ValueError(msg)
        recheck_threads(0.0)  # the cores free now, after the kNN search, for what follows
        t0 = time.perf_counter()
        seed = resolve_seed(self.random_state, shared=False)
        self.seed_ = seed
        init_shown = "given" if init is not None else init_text(self.init)
        with stage("initialisation", init_shown):
            z0 = initial_embedding(
                self, self.init if init is None else init, x, affinity, ctx, seed, dtype
            )
        timings["init"] = time.perf_counter() - t0
        opt_gen = make_generator(seed, device)
        if ctx.active:  # different negatives on every rank, same init everywhere
            opt_gen.manual_seed(int(torch.randint(0, 2**62, (1,), generator=opt_gen)) + ctx.rank)
        planned = f"{self.planned_iterations(n):,} {self._iteration_unit}"
        self._fit_data = x  # for objectives that read the data (PaCMAP, densMAP); not kept
        try:
            with stage("optimisation", planned):
                result = self._optimize(z0, affinity, ctx, opt_gen)
        finally:
            self._fit_data = None
        check_finite_embedding(result.embedding, self.lr, result.n_iter)
        timings["optimize"] = result.elapsed_s
        self.affinity_in_ = affinity
        self.knn_ = knn
        self.reference_data_ = x
        self.embedding_ = result.embedding
        self.n_iter_ = result.n_iter
        self.converged_ = result.converged
        self.timings_ = timings
        return result.embedding

    def _input_affinity(
        self, x: torch.Tensor | None, knn: KNNGraph | None, ctx: DistContext, timings: dict
    ) -> tuple[SparseAffinity, KNNGraph | None]:
        """Compute P from the data (dense methods) or from a kNN graph (searched if needed)."""
        dense = None if self.uses_knn_graph else self._affinity_from_data
        t0 = time.perf_counter()
        if dense is not None:
            if x is None:
                msg = f"{type(self).__name__} computes its affinity from the data: pass `X`."
                raise ValueError(msg)
            with stage("input affinity", affinity_text(self, x.shape[0], "all pairs")):
                affinity = dense(x)
        else:
            searched = knn is None
            if searched:
                knn = self._search_knn(x, ctx)
            else:
                knn = convert_metric(knn.to(self.device_used_), self.metric_in)
            timings["knn"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            with stage("input affinity", affinity_text(self, knn.n_samples, "kNN graph")):
                parts = self._affinity_parts(knn, ctx)
                if searched and knn_nbytes(knn) > KEEP_KNN_MAX_BYTES:
                    knn = None  # freed here: P no longer needs it (see `knn_`)
                affinity = self._affinity_from_parts(parts, ctx)
                knn = knn if affinity.holds_all_rows else None  # a block's rows only
        timings["affinity"] = time.perf_counter() - t0
        logger.info("input affinity: %d edges (%.2fs)", affinity.nnz, timings["affinity"])
        return affinity, knn

    def _affinity_parts(self, knn: KNNGraph, ctx: DistContext) -> list[Any]:
        """What P needs from the graph (the graph itself here), so that the graph can be
        freed before the heavy part of P (the t-SNE family overrides it)."""
        return [knn]

    def _affinity_from_parts(self, parts: list[Any], ctx: DistContext) -> SparseAffinity:
        """P from :meth:`_affinity_parts`' list (emptied). Under ``torchrun`` every process
        computes all of it here (the t-SNE family calibrates its rows by shard, see
        :class:`~torchdr_sc.estimators.perplexity.PerplexityMixin`)."""
        return self._affinity_from_knn(parts.pop())

    def _search_knn(self, x: torch.Tensor, ctx: DistContext) -> KNNGraph:
        return search_knn(self, x, ctx)
