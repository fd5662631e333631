"""Initial positions that come from the AnnData: an ``obsm`` key or the PAGA layout.

scanpy's ``init_pos`` takes, besides ``'spectral'`` and ``'random'``, the key of an
``obsm`` array or ``'paga'``; the estimators only know arrays, so these are turned into one
here, and the name (not the array) is what gets recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData

#: Jitter of the cells around their group's PAGA position, as a fraction of the smallest
#: distance between two group positions (small enough to keep the groups apart).
PAGA_JITTER = 0.1

_PAGA_FIX = "run sc.tl.paga(adata, groups=...) and then sc.pl.paga(adata), which stores the "
_PAGA_FIX += "group positions in adata.uns['paga']['pos']"


def paga_positions(adata: AnnData, n_components: int, scale: float, seed: int) -> np.ndarray:
    """Each cell at its group's PAGA position, with a small Gaussian jitter.

    Parameters
    ----------
    adata
        Holds ``uns['paga']`` with ``'groups'`` (an ``obs`` column) and ``'pos'`` (one row
        per group, written by ``sc.pl.paga``).
    n_components
        Must be 2 (PAGA layouts are planar).
    scale
        Standard deviation of the first coordinate of the result (the estimator's
        initial scaling).
    seed
        Seed of the jitter.

    Raises
    ------
    ValueError
        No PAGA result, no positions, or ``n_components != 2``.
    """
    paga = adata.uns.get("paga")
    if not hasattr(paga, "get") or paga.get("pos") is None or "groups" not in paga:
        msg = f"`init_pos='paga'` needs a PAGA layout: {_PAGA_FIX}."
        raise ValueError(msg)
    if n_components != 2:
        msg = f"`init_pos='paga'` gives 2-D positions; got n_components={n_components}."
        raise ValueError(msg)
    groups = adata.obs[str(paga["groups"])].astype("category")
    pos = np.asarray(paga["pos"], dtype=np.float64)
    if pos.shape != (len(groups.cat.categories), 2):
        msg = (
            f"adata.uns['paga']['pos'] has shape {pos.shape} for "
            f"{len(groups.cat.categories)} groups: {_PAGA_FIX}."
        )
        raise ValueError(msg)
    pos = pos - pos.mean(axis=0)
    spread = pos[:, 0].std()
    pos = pos * (scale / spread) if spread > 0 else pos
    gaps = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    gaps = gaps[gaps > 0]
    jitter = PAGA_JITTER * (gaps.min() if gaps.size else scale)
    rng = np.random.default_rng(seed)
    codes = groups.cat.codes.to_numpy()
    init = pos[codes] + rng.normal(scale=jitter, size=(len(codes), 2))
    return np.ascontiguousarray(init, dtype=np.float32)


def init_from_adata(adata: AnnData, est: Any) -> str | None:
    """Replace an ``init`` that names an ``obsm`` key or ``'paga'`` by an array.

    Returns the name (recorded in the parameters instead of the array), else ``None``.

    Raises
    ------
    ValueError
        An ``obsm`` array with fewer columns than ``n_components``, or an unusable PAGA
        result.
    """
    init = est.init
    if not isinstance(init, str):
        return None
    if init == "paga":
        seed = est.random_state if isinstance(est.random_state, int) else 0
        positions = paga_positions(adata, est.n_components, est.initial_scaling(), seed)
        est.set_params(init=positions)
        return init
    if init not in adata.obsm:
        return None
    array = np.asarray(adata.obsm[init], dtype=np.float32)[:, : est.n_components]
    if array.shape[1] < est.n_components:
        msg = (
            f"`init_pos={init!r}` has {array.shape[1]} columns; "
            f"n_components={est.n_components} are needed."
        )
        raise ValueError(msg)
    est.set_params(init=np.ascontiguousarray(array))
    return init
