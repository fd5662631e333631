"""Degenerate data through every ``tl`` function and every initialisation.

All rows identical, 90 % of the rows identical, two distinct points, a constant column:
the embedding written must be finite and of a sane scale, its largest coordinate within
10x of the same method's on normal data of the same size. Small (200 cells, 150
iterations) so that the whole grid runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

ad = pytest.importorskip("anndata")

import torchdr_sc.tl as tl  # noqa: E402

N, DIM, ITERATIONS = 200, 10, 150
#: ``tl`` function -> the initialisations it is tested with (and the keyword naming them).
INITS = {
    "umap": ("init_pos", ("spectral", "pca", "random")),
    "tsne": ("init", ("pca", "random")),
    "infotsne": ("init", ("pca", "random")),
    "largevis": ("init", ("pca", "random")),
    "tsnekhorn": ("init", ("pca", "random")),
}
CASES = [(method, init) for method, (_, inits) in INITS.items() for init in inits]
DATASETS = ("identical", "90% duplicates", "two points", "constant column")

#: Cases still expected to fail (none). What used to blow up here, and what fixed it:
#: the kNN search broke ties between equal rows by index, so every copy of a duplicated
#: row chose the same few hub cells (fixed: knn/ties.py spread_duplicate_ties, every backend);
#: equal weights made all the edges of a copy fire in the same epochs, once every ~70
#: (fixed: objective/sampled.py lockstep_phases); with all of a row's neighbours at one
#: distance every edge fires at every epoch, and a cell summed ~180 clipped steps in one
#: epoch (fixed: objective/sampled.py crowding_scale).
KNOWN_FAILURES: set[tuple[str, str, str]] = set()
OBJECTIVE = "summed per-edge steps of the negative-sampling epoch (objective/sampled.py)"


def make_data(name: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, DIM))
    if name == "identical":
        x = np.ones((N, DIM))
    elif name == "90% duplicates":
        x[: int(0.9 * N)] = x[0]
    elif name == "two points":
        x = np.zeros((N, DIM))
        x[N // 2 :] = 1.0
    elif name == "constant column":
        x[:, 3] = 5.0
    return x.astype(np.float32)


def embed(method: str, init: str, x: np.ndarray) -> np.ndarray:
    keyword, _ = INITS[method]
    adata = ad.AnnData(x)
    iterations = {"maxiter": ITERATIONS} if method == "umap" else {"max_iter": ITERATIONS}
    getattr(tl, method)(adata, random_state=0, device="cpu", **{keyword: init}, **iterations)
    return adata.obsm[f"X_{method}"]


@pytest.fixture(scope="module")
def normal_scale():
    """Largest coordinate of each (method, init) on normal data, computed once."""
    scales: dict[tuple[str, str], float] = {}

    def scale(method: str, init: str) -> float:
        if (method, init) not in scales:
            scales[method, init] = float(np.abs(embed(method, init, make_data("normal"))).max())
        return scales[method, init]

    return scale


def _params():
    for method, init in CASES:
        for data in DATASETS:
            marks = []
            if (method, init, data) in KNOWN_FAILURES:
                marks.append(pytest.mark.xfail(reason=OBJECTIVE, strict=False))
            yield pytest.param(method, init, data, marks=marks, id=f"{method}-{init}-{data}")


@pytest.mark.parametrize(("method", "init", "data"), list(_params()))
def test_degenerate_data_gives_a_finite_embedding_of_sane_scale(method, init, data, normal_scale):
    z = embed(method, init, make_data(data))
    assert z.shape == (N, 2)
    assert np.isfinite(z).all()
    reference = normal_scale(method, init)
    assert np.abs(z).max() <= 10 * reference, (np.abs(z).max(), reference)
    assert z.std(0).min() > 1e-3 * reference  # not every cell on one point
