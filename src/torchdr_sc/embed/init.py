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

from .._logging import get_logger
from ..graph import SparseAffinity

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


def spectral_embedding(
    P: SparseAffinity, n_components: int, generator: torch.Generator, max_iter: int = 200
) -> torch.Tensor:
    """Laplacian eigenmap of the symmetric affinity ``P`` (as UMAP's spectral init).

    Computes the eigenvectors of ``D^{-1/2} P D^{-1/2}`` just below the trivial one with
    LOBPCG on a sparse matrix, on P's device.
    """
    n = P.n
    w = P.weights.double()
    deg = torch.zeros(n, dtype=torch.float64, device=P.device).index_add_(0, P.rows, w)
    inv_sqrt = deg.clamp_min(1e-12).rsqrt()
    vals = w * inv_sqrt[P.rows] * inv_sqrt[P.cols]
    a = torch.sparse_coo_tensor(torch.stack([P.rows, P.cols]), vals, (n, n)).coalesce()
    a = a.to_sparse_csr()
    k = n_components + 1
    x0 = torch.randn(n, k, generator=generator, device=P.device, dtype=torch.float64)
    x0[:, 0] = deg.sqrt()  # the trivial eigenvector, to speed up convergence
    _, vecs = torch.lobpcg(a, k=k, X=x0, largest=True, niter=max_iter, tol=1e-6)
    emb = vecs[:, 1:k] * inv_sqrt[:, None]
    return emb.float()


def _rescale(z: torch.Tensor, scaling: float) -> torch.Tensor:
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
        except (RuntimeError, ValueError) as err:  # LOBPCG can fail on tiny / odd graphs
            logger.info("spectral init failed (%s); using a random init", err)
            z = torch.randn(n, n_components, generator=generator, device=device)
        if not torch.isfinite(z).all():
            logger.info("spectral init was not finite; using a random init")
            z = torch.randn(n, n_components, generator=generator, device=device)
    else:
        z = torch.randn(n, n_components, generator=generator, device=device)
    return _rescale(z.to(dtype), scaling)
