"""densMAP's options for :class:`~torchdr_sc.estimators.UMAP` (Narayan et al. 2021).

The density term itself is an objective (:mod:`~torchdr_sc.objective.density`); this module
holds what the estimator adds around it: the parameters (umap-learn's names and defaults),
their checks, the objective's options, and the local radii reported with ``output_dens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validation import check_number
from ..affinity import SparseAffinity
from ..distributed import DistContext
from ..objective import DENSITY_METRICS
from ..quality import graph_log_radius, local_log_radius

#: Epochs densMAP adds to UMAP's default (umap-learn's rule).
EXTRA_EPOCHS = 200


@dataclass(kw_only=True, eq=False, repr=False)
class DensMAPOptions:
    """densMAP's parameters, with umap-learn's names and defaults.

    Parameters
    ----------
    densmap
        Add densMAP's density-preservation term (Narayan, Berger & Cho, Nat. Biotechnol.
        2021): the embedding then keeps which populations are tight and which diffuse.
        Adds 200 epochs to the default number.
    dens_lambda
        Weight of the density term against UMAP's loss.
    dens_frac
        Fraction of the epochs, at the end, that include the density term.
    dens_var_shift
        Added to the variance of the embedding's log radii in the term (keeps it bounded
        while the radii are nearly equal).
    output_dens
        Also compute every point's log local radius in the data and in the embedding
        (``rad_orig_``, ``rad_emb_``; with or without ``densmap``).
    """

    densmap: bool = False
    dens_lambda: float = 2.0
    dens_frac: float = 0.3
    dens_var_shift: float = 0.1
    output_dens: bool = False

    def _check_density_params(self) -> None:
        check_density_options(self, "densmap")

    def needs_data_distances(self) -> bool:
        """Whether the fit needs the data's distances at the graph's edges."""
        return bool(self.densmap or self.output_dens)


def check_density_options(est: Any, switch: str) -> None:
    """Check the density options of ``est`` (densMAP's or den-SNE's): ``switch``
    (``'densmap'`` / ``'densne'``) and ``output_dens`` booleans, ``dens_lambda >= 0``,
    ``dens_frac`` in [0, 1], ``dens_var_shift >= 0``, a metric the radii support."""
    for name in (switch, "output_dens"):
        if not isinstance(getattr(est, name), (bool, np.bool_)):
            msg = f"`{name}` must be True or False; got {getattr(est, name)!r}."
            raise TypeError(msg)
    check_number("dens_lambda", est.dens_lambda, low=0, closed="left")
    check_number("dens_frac", est.dens_frac, low=0, high=1, closed="both")
    check_number("dens_var_shift", est.dens_var_shift, low=0, closed="left")
    if est.needs_data_distances() and est.metric_in not in DENSITY_METRICS:
        msg = (
            f"{switch} / output_dens need one of the metrics {DENSITY_METRICS}; got "
            f"metric_in={est.metric_in!r}: pass one of them or {switch}=False."
        )
        raise ValueError(msg)


def density_options(est: Any, data: Any, ctx: DistContext, n_epochs: int) -> dict[str, Any]:
    """The keyword arguments of the ``'densmap'`` objective beyond the sampled epoch's."""
    a, b = est.ab()
    return {
        "data": data,
        "metric": est.metric_in,
        "a": a,
        "b": b,
        "dens_lambda": float(est.dens_lambda),
        "dens_frac": float(est.dens_frac),
        "dens_var_shift": float(est.dens_var_shift),
        "n_epochs": int(n_epochs),
        "gather": ctx.all_gather_rows if ctx.active else None,
    }


def record_radii(est: Any, P: SparseAffinity, data: torch.Tensor, z: torch.Tensor) -> None:
    """Set ``rad_orig_`` (on the fit's graph and data) and ``rad_emb_`` (on the embedding's
    own graph), numpy ``(n,)``."""
    est.rad_orig_ = graph_log_radius(P, data, est.metric_in)
    est.rad_emb_ = local_log_radius(z.detach().float().cpu().numpy(), int(est.n_neighbors))
