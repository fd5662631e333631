"""Shared parameters of the doubly stochastic (optimal-transport) affinities."""

from __future__ import annotations

from typing import Any

from .._validation import check_number, check_option
from ._base import Affinity, check_solver_options

#: Base kernels of the doubly stochastic affinities: cost ``D`` or ``log(1 + D)``.
BASE_KERNELS = ("gaussian", "student")


class DoublyStochasticAffinity(Affinity):
    """Base of :class:`SinkhornAffinity` and :class:`DoublyStochasticQuadraticAffinity`.

    Validates the parameters both solvers share: the regularisation ``eps`` (> 0), the
    ``base_kernel``, the tolerance ``tol`` on the marginals (> 0: an iterative solver
    never reaches 0) and ``max_iter`` (>= 1).
    """

    def __init__(
        self,
        eps: float = 1.0,
        *,
        base_kernel: str = "gaussian",
        tol: float = 1e-5,
        max_iter: int = 1000,
        metric: str = "sqeuclidean",
        backend: str | None = "auto",
        device: Any = "auto",
        verbose: bool = False,
    ) -> None:
        super().__init__(metric=metric, backend=backend, device=device, verbose=verbose)
        self.eps = check_number("eps", eps, low=0.0)
        self.base_kernel = check_option("base_kernel", base_kernel, BASE_KERNELS)
        self.tol, self.max_iter = check_solver_options(tol, max_iter)
