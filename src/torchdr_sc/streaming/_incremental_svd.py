"""Approximate incremental PCA: a rank-``k`` SVD updated with each batch of rows.

This is the single-pass algorithm of scikit-learn's ``IncrementalPCA`` (Ross et al. 2008),
in torch: each batch is stacked under the current components scaled by their singular
values, plus one row that corrects for the shift of the mean, and the stack is
re-decomposed. Memory is ``O((k + b) d)`` for ``k`` components and batches of ``b`` rows;
the result approximates the exact PCA (it is exact while nothing has been truncated).
The exact alternative with a ``d x d`` matrix is :class:`~torchdr_sc.streaming.IncrementalPCA`.

References
----------
- D. A. Ross, J. Lim, R.-S. Lin, M.-H. Yang. Incremental learning for robust visual
  tracking. International Journal of Computer Vision 77, 2008.
- N. Halko, P.-G. Martinsson, J. A. Tropp. Finding structure with randomness. SIAM Review
  53(2), 2011 (the ``lowrank`` decomposition).
"""

from __future__ import annotations

import torch

#: Drivers of ``torch.linalg.svd`` (cuSOLVER's; CUDA only).
SVD_DRIVERS = (None, "gesvd", "gesvda", "gesvdj")


def randomized_svd(
    a: torch.Tensor, q: int, n_iter: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-``q`` SVD ``a ~ U diag(S) Vt`` by a randomised range finder with power iterations.

    The random start is drawn from ``generator`` on the CPU (reproducible on any device),
    unlike :func:`torch.svd_lowrank`, which draws from the global generator.
    """
    m, n = a.shape
    width = min(q, m, n)
    omega = torch.randn(n, width, generator=generator, dtype=a.dtype).to(a.device)
    basis = torch.linalg.qr(a @ omega)[0]
    for _ in range(n_iter):
        basis = torch.linalg.qr(a.T @ basis)[0]
        basis = torch.linalg.qr(a @ basis)[0]
    u_small, s, vt = torch.linalg.svd(basis.T @ a, full_matrices=False)
    return basis @ u_small, s, vt


class IncrementalSVD:
    """State of the approximate incremental PCA (see the module docstring).

    Parameters
    ----------
    n_components
        Components kept; ``None``: ``min(rows, features)`` of the first batch.
    svd_driver
        ``torch.linalg.svd`` driver (CUDA only), one of :data:`SVD_DRIVERS`.
    lowrank
        Decompose each stack by :func:`randomized_svd` with ``lowrank_q`` columns.
    lowrank_q, lowrank_niter
        Width (default ``2 * n_components``) and power iterations of the randomised SVD.
    generator
        Source of the randomised SVD's starts.
    """

    def __init__(
        self,
        n_components: int | None,
        *,
        svd_driver: str | None = None,
        lowrank: bool = False,
        lowrank_q: int | None = None,
        lowrank_niter: int = 4,
        generator: torch.Generator | None = None,
    ) -> None:
        self.n_components = n_components
        self.svd_driver, self.lowrank = svd_driver, lowrank
        self.lowrank_q, self.lowrank_niter = lowrank_q, lowrank_niter
        self.generator = generator
        self.n_samples_seen_ = 0
        self.mean_: torch.Tensor | None = None
        self.var_: torch.Tensor | None = None
        self.components_: torch.Tensor | None = None
        self.singular_values_: torch.Tensor | None = None

    def _svd(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.lowrank:
            q = self.lowrank_q or 2 * int(self.n_components)
            return randomized_svd(a, q, self.lowrank_niter, self.generator)
        driver = self.svd_driver if a.device.type == "cuda" else None
        return torch.linalg.svd(a, full_matrices=False, driver=driver)

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Mean and variance (``ddof=0``) of all rows seen with ``x`` (Chan et al.)."""
        b = x.shape[0]
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        if self.mean_ is None:
            return mean_b, m2_b / b, b
        n = self.n_samples_seen_
        total = n + b
        delta = mean_b - self.mean_
        m2 = self.var_ * n + m2_b + delta * delta * (n * b / total)
        return self.mean_ + delta * (b / total), m2 / total, total

    def partial_fit(self, x: torch.Tensor) -> None:
        """Update the decomposition with the rows ``x`` (``(b, d)``, float64)."""
        b, d = x.shape
        if self.n_components is None:
            self.n_components = min(b, d)
        mean, var, total = self._moments(x)
        if self.components_ is None:
            stack = x - mean
        else:
            mean_b = x.mean(0)
            shift = (self.n_samples_seen_ * b / total) ** 0.5 * (self.mean_ - mean_b)
            stack = torch.cat(
                [self.singular_values_[:, None] * self.components_, x - mean_b, shift[None]], 0
            )
        _, s, vt = self._svd(stack)
        idx = vt.abs().argmax(1)
        signs = torch.sign(vt[torch.arange(vt.shape[0], device=vt.device), idx])
        vt = vt * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
        k = self.n_components
        explained = s * s / max(1, total - 1)
        self.explained_variance_ratio_ = (s * s / (var * total).sum())[:k]
        self.explained_variance_ = explained[:k]
        self.noise_variance_ = (
            explained[k:].mean() if k not in (b, d) and explained.shape[0] > k else s.new_zeros(())
        )
        self.n_samples_seen_, self.mean_, self.var_ = total, mean, var
        self.components_, self.singular_values_ = vt[:k], s[:k]
