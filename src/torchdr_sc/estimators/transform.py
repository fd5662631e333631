"""``transform``: new points placed on a fitted embedding, the reference held fixed.

:meth:`Embedder.transform <torchdr_sc.estimators.Embedder.transform>` calls
:func:`transform_new`, which, for a fitted UMAP, LargeVis, InfoTSNE, TSNE, SNE or PACMAP:

1. searches the ``k`` nearest reference points of every new point (the fit's ``backend``,
   ``metric_in`` and ``k``: ``n_neighbors`` for UMAP and PACMAP, ``3 * perplexity`` for the
   t-SNE family; :func:`torchdr_sc.knn.knn` with ``query=``);
2. computes their affinity rows as the fit computed the reference's
   (:mod:`torchdr_sc.affinity.queries`: entropic rows calibrated to the perplexity, or
   umap-learn's transform memberships; weight 1 for PACMAP);
3. starts every new point at the mean of its neighbours' positions weighted by its row
   (:func:`~torchdr_sc.objective.partial.neighbour_mean`);
4. moves the new points only, with the method's own objective against the fixed reference
   (:mod:`torchdr_sc.objective.partial`): attraction to their neighbours, repulsion from the
   reference.

Schedules, written after the peers' ``transform``:

- UMAP, LargeVis, as umap-learn's ``UMAP.transform`` (McInnes, Healy & Melville
  2018): plain SGD at a quarter of the fit's learning rate, decayed linearly to 0, for
  ``max_iter // 3`` epochs, or 100 epochs (30 for more than 10,000 new points) when
  ``max_iter`` is ``None``; negatives among the reference points; the fit's clipping.
- TSNE, SNE, InfoTSNE, as openTSNE's ``TSNEEmbedding.transform`` (Poličar, Stražar & Zupan
  2023, 2024):
  250 iterations of SGD with momentum 0.8 and gains (``DeltaBarDelta``), no early
  exaggeration, exaggeration 1.5, learning rate 0.1 and every row of the gradient clipped at
  norm 0.25. openTSNE applies these to half the gradient of ``KL(p_i || q_i)``; here the
  whole gradient is computed, with the rate halved and the clip doubled (the same steps).
  ``q_i`` is normalised over the new point's pairs with every reference point; the repulsion
  is exact (``O(m n)`` per iteration) or read from a grid of reference potentials computed
  once by FFT (:data:`AUTO_GRID_MIN_PAIRS`). InfoTSNE's is the fit's objective with the
  reference held fixed: the repulsion of each new point normalised by its sum over
  ``n_negatives`` reference points drawn at every iteration, shared by blocks of new points
  (:class:`~torchdr_sc.objective.infonce.SampledStudentRepulsion`). openTSNE's transform
  calibrates the new rows to perplexity 5 by default; here they use the fit's perplexity, as
  the reference's rows did.
- PACMAP, as the pacmap package's ``PaCMAP.transform`` (Wang et al. 2021): the new points'
  near-pair attraction ``d / (10 + d)`` to their ``n_neighbors`` nearest reference points
  only, with its weight on the fit's schedule, for the fit's number of iterations with its
  optimiser (Adam) and rate; no repulsion.

Randomness (the negatives) comes from the fit's seed (``seed_``): transforming the same data
with the same fitted estimator gives the same positions, before and after pickling, on CPU.

TSNEkhorn has no ``transform``: its doubly stochastic affinities couple every pair of
points, so a new point would change every row of P and Q, including the reference's.
"""

from __future__ import annotations

from typing import Any

import torch
from sklearn.exceptions import NotFittedError

from .._device import as_float_tensor, resolve_device, to_output
from .._logging import get_logger, verbosity
from .._random import resolve_seed
from .._validation import check_number
from ..affinity.queries import entropic_query_rows, umap_query_rows
from ..distributed import is_rank_zero
from ..knn import KNNGraph
from ..knn import knn as knn_search
from ..objective import ReferenceRows, make_objective
from ..objective.partial import neighbour_mean
from ..objective.sampled import SINGLE_THREAD_WORK, single_cpu_thread
from ..optimize import Phase, optimize
from ..progress import Progress, iterations, reporting, stage
from .contrastive import UMAP, _SampledEmbedder
from .infotsne import InfoTSNE
from .pacmap import PACMAP
from .tsne import SNE, TSNE
from .tsnekhorn import TSNEkhorn

__all__ = ["AUTO_GRID_MIN_PAIRS", "attach_reference", "transform_iterations", "transform_new"]

logger = get_logger(__name__)

#: openTSNE's ``transform`` schedule for the t-SNE family (iterations, learning rate,
#: momentum, exaggeration, largest gradient norm of a row), for half the KL gradient.
OPENTSNE_TRANSFORM = {"n_iter": 250, "lr": 0.1, "momentum": 0.8, "exaggeration": 1.5, "clip": 0.25}
#: With the fit's ``repulsion='auto'``, TSNE's transform reads the repulsion from a grid of
#: reference potentials (2-D or 1-D) once ``new points x reference points`` reaches this
#: (the exact blockwise sums then take longer than the grid's one-off FFT).
AUTO_GRID_MIN_PAIRS = 2**22


def transform_kind(est: Any) -> str:
    """``'negative_sampling'``, ``'tsne'``, ``'sne'``, ``'infotsne'`` or ``'pacmap'``: the
    objective (:func:`~torchdr_sc.objective.make_objective`) that moves ``est``'s new points.

    Raises
    ------
    NotImplementedError
        For TSNEkhorn (why, and what to use instead) and estimators without ``transform``.
    """
    if isinstance(est, TSNEkhorn):
        msg = (
            "TSNEkhorn has no transform: its doubly stochastic affinities (Sinkhorn) couple "
            "every pair of points, so adding points would change every row of P and Q, the "
            "reference's included. Fit TSNE (same perplexity) to place new points on a map."
        )
        raise NotImplementedError(msg)
    if isinstance(est, _SampledEmbedder):
        return "negative_sampling"
    if isinstance(est, InfoTSNE):
        return "infotsne"
    if isinstance(est, PACMAP):
        return "pacmap"
    if isinstance(est, SNE):
        return "sne"
    if isinstance(est, TSNE):
        return "tsne"
    msg = (
        f"{type(est).__name__} has no transform; UMAP, LargeVis, InfoTSNE, TSNE, SNE and "
        "PACMAP place new points on a fitted embedding."
    )
    raise NotImplementedError(msg)


def _reference(est: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The fitted reference data and embedding, or the error saying what is missing."""
    name = type(est).__name__
    y = getattr(est, "embedding_", None)
    if y is None:
        msg = (
            f"This {name} instance is not fitted yet: call `fit` (or `fit_transform`) with "
            "the reference data before `transform`."
        )
        raise NotFittedError(msg)
    x = getattr(est, "reference_data_", None)
    if x is None:
        msg = (
            f"This {name} was fitted without in-memory data (a precomputed `affinity` or "
            "`knn`, or streamed input), so it holds no reference data to search: fit it on "
            "`X`, or give the reference with "
            "`torchdr_sc.estimators.transform.attach_reference(est, X, embedding)`."
        )
        raise ValueError(msg)
    return x, y


def _new_data(est: Any, X: Any, x_ref: torch.Tensor) -> torch.Tensor:
    """``X`` checked (2-D, finite, the reference's features) on the reference's device."""
    x = as_float_tensor(X, device=x_ref.device, dtype=x_ref.dtype)
    if x.shape[1] != x_ref.shape[1]:
        msg = (
            f"`X` has {x.shape[1]} features but {type(est).__name__} was fitted on data "
            f"with {x_ref.shape[1]}; transform needs the representation of the fit (the "
            "same features, e.g. the same PCA)."
        )
        raise ValueError(msg)
    return x


def transform_iterations(est: Any, m: int, max_iter: int | None = None) -> int:
    """Iterations (epochs) of the transform of ``m`` new points (see the module notes)."""
    if max_iter is not None:
        return int(max_iter)
    kind = transform_kind(est)
    if kind == "pacmap":
        return est.planned_iterations(m)
    if kind != "negative_sampling":
        return int(OPENTSNE_TRANSFORM["n_iter"])
    if est.max_iter is None:
        return 100 if m <= 10_000 else 30
    return max(1, int(est.max_iter) // 3)


def _search(est: Any, x_ref: torch.Tensor, x: torch.Tensor) -> KNNGraph:
    n = x_ref.shape[0]
    if isinstance(est, (UMAP, PACMAP)):
        k = min(int(est.n_neighbors), n)
    else:
        k = est.neighbours_needed(n)
    with stage("kNN search", f"{x.shape[0]:,} new cells among {n:,}, k={k}"):
        return knn_search(x_ref, k, backend=est.backend, metric=est.metric_in, query=x)


def _rows(est: Any, graph: KNNGraph) -> torch.Tensor:
    """The new points' affinity rows, calibrated as the fit's."""
    if isinstance(est, UMAP):
        return umap_query_rows(graph, int(est.n_neighbors))
    if isinstance(est, PACMAP):  # the plain nearest reference points, weight 1
        return torch.ones_like(graph.distances)
    return entropic_query_rows(
        graph,
        float(est.perplexity),
        metric=est.metric_in,
        tol=est.tol_affinity,
        max_iter=est.max_iter_affinity,
    )


def _student_repulsion(est: Any, y: torch.Tensor, m: int) -> str:
    """TSNE's repulsion for the transform, ``'exact'`` or ``'fft'``: the fit's choice, by
    pairs for ``'auto'``."""
    grid_ok = y.shape[1] in (1, 2)
    choice = est.repulsion
    if choice == "auto":
        choice = "fft" if grid_ok and m * y.shape[0] >= AUTO_GRID_MIN_PAIRS else "exact"
    if choice == "fft" and grid_ok:
        logger.info("transform: repulsion read from a grid of reference potentials (FFT)")
        return "fft"
    logger.info("transform: exact repulsion (%d x %d pairs per iteration)", m, y.shape[0])
    return "exact"


def _kl_objective(est: Any, kind: str, y: torch.Tensor, rows: ReferenceRows, m: int):
    """The fit's objective with the reference ``y`` held fixed, every row's gradient clipped
    at openTSNE's norm (doubled: openTSNE clips half the gradient)."""
    clip = 2.0 * OPENTSNE_TRANSFORM["clip"]
    if kind == "tsne":
        return make_objective(
            "tsne",
            rows,
            reference=y,
            repulsion=_student_repulsion(est, y, m),
            grid={
                "n_interpolation_points": est.n_interpolation_points,
                "min_num_intervals": est.min_num_intervals,
                "ints_in_interval": est.ints_in_interval,
            },
            clip=clip,
        )
    if kind == "infotsne":
        seed = int(est.seed_) + 1
        n_negatives = int(est.n_negatives)
        return make_objective(
            "infotsne", rows, reference=y, n_negatives=n_negatives, seed=seed, clip=clip
        )
    return make_objective("sne", rows, reference=y, clip=clip)


def _optimize_kl(est: Any, kind: str, z0, y, graph: KNNGraph, p, n_iter: int):
    """openTSNE's transform schedule on the per-point KL objective (TSNE, SNE) or its
    InfoNC-t-SNE estimate (InfoTSNE)."""
    s = OPENTSNE_TRANSFORM
    objective = _kl_objective(est, kind, y, ReferenceRows(graph.indices, p), z0.shape[0])
    phases = [Phase(n_iter, exaggeration=s["exaggeration"], momentum=s["momentum"])]
    return optimize(
        z0,
        objective,
        phases,
        lr=s["lr"] / 2.0,  # openTSNE's rate, for the whole gradient
        optimizer="DeltaBarDelta",
        optimizer_kwargs={"momentum": s["momentum"]},
        min_grad_norm=est.min_grad_norm,
        check_interval=est.check_interval,
        progress=iterations(n_iter, unit="iterations"),
    )


def _optimize_sampled(est: Any, z0, y, graph: KNNGraph, w, n_epochs: int):
    """umap-learn's transform schedule on the method's negative-sampling loss."""
    objective = make_objective(
        "negative_sampling",
        ReferenceRows(graph.indices, w),
        reference=y,
        kernel=est._kernel(),
        n_negatives=int(est.n_negatives),
        seed=int(est.seed_) + 1,
        discard_tails=bool(est.discard_NNs),
    )
    lr = (1.0 if est.lr == "auto" else float(est.lr)) / 4.0
    small = z0.device.type == "cpu" and objective.work < SINGLE_THREAD_WORK
    with single_cpu_thread(small):
        return optimize(
            z0,
            objective,
            [Phase(n_epochs, lr_decay="linear")],
            lr=lr,
            optimizer="SGD",
            min_grad_norm=est.min_grad_norm,
            check_interval=est.check_interval,
            progress=iterations(n_epochs, unit="epochs"),
        )


def _optimize_pacmap(est: Any, z0, y, graph: KNNGraph, w, n_iter: int):
    """The pacmap package's transform: the near-pair term of the new points on its
    schedule, the fit's optimiser and rate."""
    objective = make_objective(
        "pacmap",
        ReferenceRows(graph.indices, w),
        reference=y,
        iter_per_phase=int(est.iter_per_phase),
    )
    return optimize(
        z0,
        objective,
        [Phase(n_iter)],
        lr=1.0 if est.lr == "auto" else float(est.lr),
        optimizer=est.optimizer,
        optimizer_kwargs=est.optimizer_kwargs if isinstance(est.optimizer_kwargs, dict) else {},
        min_grad_norm=est.min_grad_norm,
        check_interval=est.check_interval,
        progress=iterations(n_iter, unit="iterations"),
    )


def transform_new(est: Any, X: Any, *, max_iter: int | None = None) -> Any:
    """Place the rows of ``X`` on the fitted embedding of ``est`` (module notes).

    Parameters
    ----------
    est
        A fitted UMAP, LargeVis, InfoTSNE, TSNE or SNE.
    X
        ``(m, n_features)`` new data in the representation of the fit.
    max_iter
        Iterations (epochs) of the transform; ``None``: :func:`transform_iterations`.

    Returns
    -------
    ``(m, n_components)`` positions: numpy float32 for numpy input (float64 for float64),
    a tensor on ``X``'s device for torch input.
    """
    kind = transform_kind(est)
    x_ref, y = _reference(est)
    if max_iter is not None:
        check_number("max_iter", max_iter, kind=int, low=1, closed="left")
    x = _new_data(est, X, x_ref)
    shown = est.progress_bar and is_rank_zero()
    progress = Progress(f"{type(est).__name__}.transform") if shown else None
    with verbosity(est.verbose and is_rank_zero()), reporting(progress):
        graph = _search(est, x_ref, x)
        with stage("new affinity rows", f"{x.shape[0]:,} cells"):
            rows = _rows(est, graph)
        z0 = neighbour_mean(y, graph.indices, rows)
        n_iter = transform_iterations(est, x.shape[0], max_iter)
        unit = "epochs" if kind == "negative_sampling" else "iterations"
        with stage("optimisation", f"{n_iter:,} {unit}, reference fixed"):
            if kind == "negative_sampling":
                result = _optimize_sampled(est, z0, y, graph, rows, n_iter)
            elif kind == "pacmap":
                result = _optimize_pacmap(est, z0, y, graph, rows, n_iter)
            else:
                result = _optimize_kl(est, kind, z0, y, graph, rows, n_iter)
    z = result.embedding
    if not bool(torch.isfinite(z).all()):
        msg = "transform diverged: the new positions hold NaN or inf; lower the learning rate `lr`."
        raise FloatingPointError(msg)
    return to_output(z, X)


def attach_reference(est: Any, X: Any, embedding: Any) -> Any:
    """Make ``est`` able to ``transform`` onto an existing embedding, without fitting.

    For an embedding computed earlier and stored elsewhere (e.g. ``adata.obsm['X_umap']``
    with the representation it came from): the estimator's parameters (``n_neighbors`` /
    ``perplexity``, ``a`` / ``b``, ``metric_in``, ``backend`` ...) must be those of the run
    that made it.

    Parameters
    ----------
    est
        An estimator with ``transform`` (its fitted state, if any, is replaced).
    X
        ``(n, n_features)`` reference data (kept, on the estimator's device).
    embedding
        ``(n, n_components)`` reference embedding.

    Returns
    -------
    ``est``.
    """
    transform_kind(est)
    est.validate()
    device = resolve_device(est.device, X)
    x = as_float_tensor(X, device=device)
    y = as_float_tensor(embedding, device=device, name="embedding", dtype=x.dtype)
    if y.shape != (x.shape[0], est.n_components):
        msg = (
            f"`embedding` must have shape (n_samples, n_components) = ({x.shape[0]}, "
            f"{est.n_components}); got {tuple(y.shape)}."
        )
        raise ValueError(msg)
    est.check_n_samples(x.shape[0])
    est.reference_data_, est.embedding_, est.device_used_ = x, y, device
    est.seed_ = resolve_seed(est.random_state, shared=False)
    return est
