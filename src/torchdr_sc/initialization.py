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

from ._logging import get_logger
from .affinity import SparseAffinity

logger = get_logger(__name__)

INIT_NAMES = ("pca", "spectral", "normal", "random")


def pca_components(x: torch.Tensor, n_components: int) -> torch.Tensor:
    """Projection of ``x`` on its top principal components, signs made deterministic."""
    xc = x - x.mean(0, keepdim=True)
    d = x.shape[1]
    if d <= 2048:
        cov = xc.T @ xc
        evals, evecs = torch.linalg.eigh(cov.double())
        comps = evecs[:, torch.argsort(evals, descending=True)[:n_components]].to(x.dtype)
    else:
        _, _, v = torch.linalg.svd(xc[: min(x.shape[0], 20000)], full_matrices=False)
        comps = v[:n_components].T
    proj = xc @ comps
    if proj.shape[1] < n_components:  # fewer features than components: pad with zeros
        pad = torch.zeros(x.shape[0], n_components - proj.shape[1], dtype=x.dtype, device=x.device)
        proj = torch.cat([proj, pad], 1)
    # deterministic sign: the largest-magnitude entry of every column is positive
    idx = proj.abs().argmax(0)
    signs = torch.sign(proj[idx, torch.arange(proj.shape[1], device=x.device)])
    return proj * torch.where(signs == 0, torch.ones_like(signs), signs)


#: Extra vectors in the LOBPCG block (beyond the k wanted): faster convergence on graphs
#: whose top eigenvalues are clustered near 1 (well separated cell types).
LOBPCG_EXTRA = 6


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
        took 43 s of a 1M-point UMAP whose optimisation takes 1 s on an H100), else ARPACK.
    """
    n, k = P.n, n_components + 1
    rows, cols = P.rows, P.cols
    w = P.weights.double()
    deg = torch.zeros(n, dtype=torch.float64, device=w.device).index_add_(0, rows, w)
    inv_sqrt = deg.clamp_min(1e-12).rsqrt()
    vals_w = w * inv_sqrt[rows] * inv_sqrt[cols]
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    if solver == "auto":
        solver = "lobpcg" if P.device.type == "cuda" else "arpack"
    if solver == "lobpcg":
        A = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), vals_w, (n, n), check_invariants=False
        ).coalesce()
        start = torch.rand(
            n, k + LOBPCG_EXTRA, generator=torch.Generator().manual_seed(seed), dtype=A.dtype
        )
        vals, vecs = torch.lobpcg(A, k=k, X=start.to(A.device), largest=True, tol=1e-4, niter=300)
    else:
        import scipy.sparse as sp
        from scipy.sparse.linalg import eigsh

        r, c = rows.cpu().numpy(), cols.cpu().numpy()
        a = sp.csr_matrix((vals_w.cpu().numpy(), (r, c)), shape=(n, n))
        v0 = np.random.default_rng(seed).uniform(0.5, 1.5, n)
        vals_np, vecs_np = eigsh(a, k=k, which="LA", v0=v0, tol=1e-4, maxiter=max(1000, 5 * n))
        vals, vecs = torch.from_numpy(vals_np), torch.from_numpy(vecs_np).to(w.device)
    order = torch.argsort(vals.cpu(), descending=True)[1:k].to(vecs.device)
    emb = vecs[:, order] * inv_sqrt[:, None]
    return emb.to(P.device, torch.float32).contiguous()


def rescale(z: torch.Tensor, scaling: float) -> torch.Tensor:
    """``z`` scaled so that its first coordinate has standard deviation ``scaling``.

    Left as is when that deviation is zero or not finite.
    """
    std = z[:, 0].std()
    if not torch.isfinite(std) or std <= 0:
        return z
    return z * (scaling / std)


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

    Parameters
    ----------
    init
        ``'pca'``, ``'spectral'``, ``'normal'`` / ``'random'``, or an array ``(n, n_components)``
        (used as given, not rescaled).
    x
        The input data (for PCA); ``None`` when only a graph is known (PCA then falls back to
        spectral, with a log message).
    scaling
        Standard deviation of the first coordinate after rescaling.
    affinity
        Symmetric input affinity (for spectral).
    """
    if not isinstance(init, str):
        arr = init.detach() if isinstance(init, torch.Tensor) else torch.as_tensor(np.asarray(init))
        return arr.to(device=device, dtype=dtype).clone()
    if init == "pca" and x is None:
        logger.info("init='pca' needs the data; using init='spectral' on the given graph")
        init = "spectral"
    if init == "pca":
        z = pca_components(x, n_components)
    elif init == "spectral":
        try:
            z = spectral_embedding(affinity, n_components, generator)
        except (RuntimeError, ValueError, ArithmeticError) as err:  # ARPACK on odd graphs
            logger.info("spectral init failed (%s); using a random init", err)
            z = torch.randn(n, n_components, generator=generator, device=device)
        if not torch.isfinite(z).all():
            logger.info("spectral init was not finite; using a random init")
            z = torch.randn(n, n_components, generator=generator, device=device)
    else:
        z = torch.randn(n, n_components, generator=generator, device=device)
    return rescale(z.to(dtype), scaling)
