"""Initial embeddings: PCA, spectral (graph Laplacian eigenvectors), random, or a given array.

Every initialisation is rescaled so that the standard deviation of its first coordinate is
``scaling`` (Kobak & Linderman 2021 showed that a small, informative initialisation such as
scaled PCA is what preserves global structure in t-SNE and UMAP).

References
----------
- D. Kobak, G. Linderman. Initialization is critical for preserving global data structure
  in both t-SNE and UMAP. Nature Biotechnology 2021.
- M. Belkin, P. Niyogi. Laplacian Eigenmaps for Dimensionality Reduction. Neural Comp. 2003.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._device import one_thread_on_cpu
from ._logging import get_logger
from ._reduce import fixed_order_std
from ._validation import check_finite_rows
from .affinity import SparseAffinity
from .knn.ties import duplicate_groups
from .objective.poincare import expmap0, project

logger = get_logger(__name__)

INIT_NAMES = ("pca", "spectral", "normal", "random")


#: Up to this many features, PCA diagonalises the ``d x d`` scatter matrix (exact);
#: above it, that matrix is too large and the axes come from an SVD of the first
#: :data:`PCA_SVD_ROWS` rows instead.
PCA_EXACT_MAX_FEATURES = 2048
#: Rows whose SVD gives the principal axes above :data:`PCA_EXACT_MAX_FEATURES` features.
PCA_SVD_ROWS = 20_000


def principal_axes(scatter: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading eigenvectors of a scatter (or covariance) matrix, in float64.

    Parameters
    ----------
    scatter
        ``(d, d)`` symmetric matrix ``Xc^T Xc`` of centred rows ``Xc`` (or that matrix
        divided by a positive count); diagonalised in float64 whatever its dtype.
    n_components
        Number of axes kept (fewer when ``d < n_components``).

    Returns
    -------
    axes
        ``(d, min(d, n_components))`` float64 unit eigenvectors as columns, by decreasing
        eigenvalue.
    eigenvalues
        ``(min(d, n_components),)`` matching float64 eigenvalues (the variance along each
        axis times the divisor of ``scatter``, if any).
    """
    evals, evecs = torch.linalg.eigh(scatter.double())
    order = torch.argsort(evals, descending=True)[:n_components]
    return evecs[:, order], evals[order]


def principal_axes_svd(centred_rows: torch.Tensor, n_components: int) -> torch.Tensor:
    """Leading right singular vectors of centred rows: principal axes without a scatter matrix.

    Parameters
    ----------
    centred_rows
        ``(m, d)`` rows minus the data mean (in practice the first :data:`PCA_SVD_ROWS` rows).
    n_components
        Number of axes kept (fewer when ``min(m, d) < n_components``).

    Returns
    -------
    torch.Tensor
        ``(d, min(m, d, n_components))`` unit axes as columns, by decreasing singular value,
        in the dtype of ``centred_rows``.
    """
    _, _, v = torch.linalg.svd(centred_rows, full_matrices=False)
    return v[:n_components].T


def pad_columns(proj: torch.Tensor, n_components: int) -> torch.Tensor:
    """``proj`` with zero columns appended up to ``n_components`` columns.

    PCA of data with fewer features (or rows) than components leaves the missing
    coordinates at zero.
    """
    if proj.shape[1] >= n_components:
        return proj
    pad = proj.new_zeros((proj.shape[0], n_components - proj.shape[1]))
    return torch.cat([proj, pad], 1)


def sign_by_largest_entry(columns: torch.Tensor) -> torch.Tensor:
    """``columns`` with each column's sign flipped so that its largest-magnitude entry is positive.

    Principal axes are defined up to sign; this rule makes them (or the coordinates on
    them) deterministic. All-zero columns are left as they are.

    Parameters
    ----------
    columns
        ``(m, k)`` tensor: PCA coordinates of ``m`` rows, or ``k`` axes of length ``m``.

    Returns
    -------
    torch.Tensor
        ``(m, k)`` tensor, every column multiplied by ``+1`` or ``-1``.
    """
    idx = columns.abs().argmax(0)
    signs = torch.sign(columns[idx, torch.arange(columns.shape[1], device=columns.device)])
    return columns * torch.where(signs == 0, torch.ones_like(signs), signs)


def pca_components(x: torch.Tensor, n_components: int) -> torch.Tensor:
    """Coordinates of ``x`` on its top principal axes, the initialisation ``init='pca'``.

    Up to :data:`PCA_EXACT_MAX_FEATURES` features, the axes are the eigenvectors of the
    scatter matrix (:func:`principal_axes`); above, the right singular vectors of the first
    :data:`PCA_SVD_ROWS` centred rows (:func:`principal_axes_svd`). Missing components
    (fewer features than ``n_components``) are zero; signs follow
    :func:`sign_by_largest_entry` on the coordinates.

    Parameters
    ----------
    x
        ``(n, d)`` data.
    n_components
        Number of coordinates.

    Returns
    -------
    torch.Tensor
        ``(n, n_components)`` coordinates, in ``x``'s dtype and device.
    """
    xc = x - x.mean(0, keepdim=True)
    if x.shape[1] <= PCA_EXACT_MAX_FEATURES:
        with one_thread_on_cpu(x.device):  # the same bits whatever the thread count
            scatter = xc.T @ xc
        axes = principal_axes(scatter, n_components)[0].to(x.dtype)
    else:
        axes = principal_axes_svd(xc[:PCA_SVD_ROWS], n_components)
    return sign_by_largest_entry(pad_columns(xc @ axes, n_components))


#: Extra vectors in the LOBPCG block (beyond the k wanted): faster convergence on graphs
#: whose top eigenvalues are clustered near 1 (well separated cell types).
LOBPCG_EXTRA = 6


def _needs_dense_solver(n: int, k: int, solver: str) -> bool:
    """Whether the sparse solver cannot take ``k`` eigenvectors of an ``n x n`` matrix.

    ARPACK needs ``k < n - 1``; :func:`torch.lobpcg` needs ``n >= 3`` times its block.
    """
    if solver == "lobpcg":
        return n < 3 * (k + LOBPCG_EXTRA)
    return k >= n - 1


def _top_eigenvectors(
    a: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, n: int, k: int, seed: int, solver: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest eigenpairs of the symmetric matrix with entries ``a`` at (rows, cols)."""
    if _needs_dense_solver(n, k, solver):  # a few points: the dense solver is exact and cheap
        dense = torch.zeros(n, n, dtype=torch.float64, device=a.device)
        dense.index_put_((rows, cols), a, accumulate=True)
        vals, vecs = torch.linalg.eigh(dense)
        return vals[-k:], vecs[:, -k:]
    if solver == "lobpcg":
        A = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), a, (n, n), check_invariants=False
        ).coalesce()
        start = torch.rand(
            n, k + LOBPCG_EXTRA, generator=torch.Generator().manual_seed(seed), dtype=A.dtype
        )
        return torch.lobpcg(A, k=k, X=start.to(A.device), largest=True, tol=1e-4, niter=300)
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    r, c = rows.cpu().numpy(), cols.cpu().numpy()
    m = sp.csr_matrix((a.cpu().numpy(), (r, c)), shape=(n, n))
    v0 = np.random.default_rng(seed).uniform(0.5, 1.5, n)
    vals_np, vecs_np = eigsh(m, k=k, which="LA", v0=v0, tol=1e-4, maxiter=max(1000, 5 * n))
    return torch.from_numpy(vals_np), torch.from_numpy(vecs_np).to(a.device)


def spectral_embedding(
    P: SparseAffinity, n_components: int, generator: torch.Generator, solver: str = "auto"
) -> torch.Tensor:
    """Laplacian eigenmap of the symmetric affinity ``P`` (as UMAP's spectral init).

    The eigenvectors of ``D^{-1/2} P D^{-1/2}`` with the largest eigenvalues after the
    trivial one (equivalently the smallest of the normalised Laplacian; Belkin & Niyogi,
    *Laplacian eigenmaps*, Neural Computation 2003), rescaled by ``D^{-1/2}``. Graphs with
    several connected components get the eigenvectors of the whole graph, which already
    separate the components.

    Parameters
    ----------
    solver
        ``'arpack'``: Lanczos (``scipy.sparse.linalg.eigsh``) on the CPU, as umap-learn;
        ``'lobpcg'``: :func:`torch.lobpcg` on the affinity's device (Knyazev, SIAM J. Sci.
        Comput. 2001), float64; ``'auto'``: LOBPCG for CUDA affinities (ARPACK on the host
        would take longer than the whole GPU optimisation), else ARPACK.
        Graphs too small for the chosen solver (``n_components + 1`` close to the number
        of points) are solved densely with :func:`torch.linalg.eigh`.

    Raises
    ------
    ValueError
        ``n_components`` is not smaller than the number of points (a Laplacian eigenmap
        of ``n`` points has ``n - 1`` non-trivial coordinates).
    """
    n, k = P.n, n_components + 1
    if k > n:
        msg = f"a spectral layout of {n} points has at most {n - 1} coordinates; got {k - 1}."
        raise ValueError(msg)
    rows, cols = P.rows, P.cols
    w = P.weights.double()
    deg = torch.zeros(n, dtype=torch.float64, device=w.device).index_add_(0, rows, w)
    inv_sqrt = deg.clamp_min(1e-12).rsqrt()
    vals_w = w * inv_sqrt[rows] * inv_sqrt[cols]
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    if solver == "auto":
        solver = "lobpcg" if P.device.type == "cuda" else "arpack"
    vals, vecs = _top_eigenvectors(vals_w, rows, cols, n, k, seed, solver)
    order = torch.argsort(vals.cpu(), descending=True)[1:k].to(vecs.device)
    emb = vecs[:, order] * inv_sqrt[:, None]
    return emb.to(P.device, torch.float32).contiguous()


#: Above this fraction of cells whose rows of P have an exact twin, the spectral layout is
#: not used (see :func:`twin_rows_fraction`).
MAX_TWIN_FRACTION = 0.1


def twin_rows_fraction(P: SparseAffinity) -> float:
    """Fraction of the rows of ``P`` equal to another row (same neighbours, same weights).

    Rows that are equal get the same coordinates in every non-trivial eigenvector, so a
    spectral layout stacks them on one point. They come from duplicated cells: the kNN
    search breaks the ties between identical distances the same way for every copy, so
    all copies choose the same neighbours, which become hubs of the graph. A layout with
    large stacks next to separate hubs sends the first optimisation steps far off (UMAP on
    300 identical rows reached coordinates of 2,000 instead of 5): such a graph gets a
    random initialisation.
    """
    bits = P.weights.float().view(torch.int32).to(torch.int64)
    edge = (P.cols.long() + 1) * -7046029254386353131 + bits * -4658895280553007687
    edge = edge ^ (edge >> 29)
    row = torch.zeros(P.n, dtype=torch.int64, device=edge.device).index_add_(0, P.rows, edge)
    _, inverse, counts = torch.unique(row, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).double().mean())


def duplicated_rows_fraction(x: torch.Tensor) -> float:
    """Fraction of the rows of ``x`` exactly equal to another row (duplicated cells).

    Read from the data: the kNN search spreads the ties between copies over their group
    (``knn.ties.spread_duplicate_ties``), so copies no longer
    share their rows of ``P`` and :func:`twin_rows_fraction` misses them; a spectral
    layout still stacks them on one point.
    """
    groups = duplicate_groups(x)
    if groups is None:
        return 0.0
    group, counts = groups
    return float((counts[group] > 1).double().mean())


def rescale(z: torch.Tensor, scaling: float) -> torch.Tensor:
    """``z`` scaled so that its first coordinate has standard deviation ``scaling``.

    Left as is when that deviation is zero or not finite.
    """
    std = fixed_order_std(z[:, 0])  # the same bits whatever the thread count
    if not torch.isfinite(std) or std <= 0:
        return z
    return z * (scaling / std)


#: Standard deviation of the noise added to a PCA or spectral initialisation, relative to
#: ``scaling`` (umap-learn adds 1e-4 to coordinates of size 10): duplicated cells start
#: apart instead of on one point, where no gradient can separate them.
INIT_JITTER = 1e-4


def check_init_array(init: Any, n: int, n_components: int, name: str = "init") -> np.ndarray:
    """Check a given initial embedding: shape ``(n, n_components)``, real, finite.

    Parameters
    ----------
    init
        Array-like or tensor given as the initial embedding.
    n, n_components
        The shape it must have.
    name
        How to name it in messages (``'init_pos'`` for ``tl.umap``).

    Returns
    -------
    numpy.ndarray
        The array as float64 (a copy only when a conversion was needed).

    Raises
    ------
    TypeError
        Values that are not real numbers.
    ValueError
        A wrong shape, or NaN / inf (the message counts the rows holding them).
    """
    if isinstance(init, torch.Tensor):
        init = init.detach().cpu().numpy()
    try:
        arr = np.asarray(init)
        if np.iscomplexobj(arr):
            raise TypeError
        arr = arr.astype(np.float64, copy=False)
    except (TypeError, ValueError) as err:
        msg = f"`{name}` must be an array of real numbers; got {type(init).__name__}."
        raise TypeError(msg) from err
    if arr.shape != (n, n_components):
        msg = (
            f"`{name}` array must have shape (n_samples, n_components) = "
            f"({n}, {n_components}); got {arr.shape}."
        )
        raise ValueError(msg)
    check_finite_rows(arr, name)
    return arr


def _random(n: int, n_components: int, generator: torch.Generator, device: Any) -> torch.Tensor:
    return torch.randn(n, n_components, generator=generator, device=device)


def _spectral_or_fallback(
    affinity: SparseAffinity,
    n_components: int,
    generator: torch.Generator,
    x: torch.Tensor | None = None,
) -> torch.Tensor:
    """The spectral layout, or a random init where it would stack cells or failed.

    Duplicated cells are counted in the data ``x`` when given
    (:func:`duplicated_rows_fraction`) and in the graph (:func:`twin_rows_fraction`).
    """
    n, device = affinity.n, affinity.device
    twins = twin_rows_fraction(affinity)
    if x is not None:
        twins = max(twins, duplicated_rows_fraction(x))
    if twins > MAX_TWIN_FRACTION:
        logger.info(
            "spectral init: %.0f%% of the cells have the same neighbours as another cell "
            "(duplicated rows), which a spectral layout stacks on one point; using a "
            "random init",
            100 * twins,
        )
        return _random(n, n_components, generator, device)
    try:
        z = spectral_embedding(affinity, n_components, generator)
    except (RuntimeError, ValueError, ArithmeticError) as err:  # ARPACK on odd graphs
        logger.info("spectral init failed (%s); using a random init", err)
        return _random(n, n_components, generator, device)
    if not torch.isfinite(z).all():
        logger.info("spectral init was not finite; using a random init")
        return _random(n, n_components, generator, device)
    return z


def into_poincare_ball(z: torch.Tensor, given: bool = False) -> torch.Tensor:
    """An initial embedding in the Poincaré ball (COSNE): a computed one (``given=False``)
    through the exponential map at the origin, ``tanh(|z|) z / |z|`` (TorchDR's
    ``init='hyperbolic'`` maps its normal draws so), a given one only kept strictly inside
    (:func:`~torchdr_sc.objective.poincare.project`)."""
    return project(z if given else expmap0(z))


def initialize(
    init: Any,
    *,
    x: torch.Tensor | None,
    n: int,
    n_components: int,
    scaling: float,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
    affinity: SparseAffinity | None = None,
) -> torch.Tensor:
    """Initial embedding ``(n, n_components)``.

    ``'pca'`` and ``'spectral'`` go through :func:`scaled_init` (rescaled, a small noise so
    that duplicated cells do not start on one point). On degenerate data they fall back to
    a random init, with a log message: PCA of rows that are all equal (it has no axis),
    spectral on data or a graph whose rows are largely duplicated
    (:func:`duplicated_rows_fraction`, :func:`twin_rows_fraction`), a spectral solve that
    fails.

    Parameters
    ----------
    init
        ``'pca'``, ``'spectral'``, ``'normal'`` / ``'random'``, or an array ``(n, n_components)``
        (checked with :func:`check_init_array`, then used as given, not rescaled).
    x
        The input data (for PCA); ``None`` when only a graph is known (PCA then falls back to
        spectral, with a log message).
    scaling
        Standard deviation of the first coordinate after rescaling.
    affinity
        Symmetric input affinity (for spectral).

    Raises
    ------
    TypeError, ValueError
        A given array that is not real, of the wrong shape, or not finite.
    """
    if not isinstance(init, str):
        arr = check_init_array(init, n, n_components)
        return torch.as_tensor(arr).to(device=device, dtype=dtype).clone()
    if init == "pca" and x is None:
        logger.info("init='pca' needs the data; using init='spectral' on the given graph")
        init = "spectral"
    if init == "pca":
        z = pca_components(x, n_components)
    elif init == "spectral":
        z = _spectral_or_fallback(affinity, n_components, generator, x)
    else:
        return rescale(_random(n, n_components, generator, device).to(dtype), scaling)
    return scaled_init(z.to(device=device, dtype=dtype), scaling, generator, f"init={init!r}")


def scaled_init(
    z: torch.Tensor, scaling: float, generator: torch.Generator, what: str = "the init"
) -> torch.Tensor:
    """A computed layout (PCA or spectral coordinates) made into an initial embedding.

    A layout that puts every cell on one point (PCA of equal rows: no axis) is replaced by
    a random one (logged); the result is rescaled (:func:`rescale`) and gets a noise of
    standard deviation ``INIT_JITTER * scaling`` (:data:`INIT_JITTER`), so that duplicated
    cells do not start on one point.

    Parameters
    ----------
    z
        ``(n, n_components)`` layout.
    scaling
        Standard deviation of the first coordinate of the result.
    generator
        Draws the noise (and the random fallback).
    what
        How to name the layout in the log message.
    """
    if bool((z[:, 0] == z[0, 0]).all()):
        logger.info("%s puts every cell on one point (all rows equal); using a random init", what)
        z = torch.randn(z.shape, generator=generator, device=generator.device).to(z)
    z = rescale(z, scaling)
    noise = torch.randn(z.shape, generator=generator, device=generator.device, dtype=z.dtype)
    return z + noise.to(z.device) * (INIT_JITTER * scaling)
