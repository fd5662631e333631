"""Shared fixtures: small real datasets (bundled with sklearn / scanpy, no download)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits():
    """sklearn digits: (1797, 64) float32 and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target


@pytest.fixture(scope="session")
def pbmc():
    """scanpy's bundled pbmc68k_reduced: X_pca (700, 50) float32 and bulk_labels codes."""
    sc = pytest.importorskip("scanpy")
    adata = sc.datasets.pbmc68k_reduced()
    return adata.obsm["X_pca"].astype(np.float32), adata.obs["bulk_labels"].cat.codes.to_numpy()


@pytest.fixture
def blobs():
    """Small Gaussian blobs (300 x 10) with labels, float32."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=8.0, size=(4, 10))
    labels = rng.integers(0, 4, 300)
    x = centers[labels] + rng.normal(size=(300, 10))
    return x.astype(np.float32), labels


@pytest.fixture
def pbmc_adata():
    """A fresh pbmc68k_reduced AnnData (scanpy's bundled dataset)."""
    sc = pytest.importorskip("scanpy")
    return sc.datasets.pbmc68k_reduced()


def _anndata_state(adata) -> tuple:
    """Keys and object identities of obsm, obsp and uns (to check nothing was written)."""
    return tuple(
        sorted((k, id(v)) for k, v in getattr(adata, slot).items())
        for slot in ("obsm", "obsp", "uns")
    )


@pytest.fixture
def anndata_state():
    """The function giving an AnnData's keys and object identities (compare before / after)."""
    return _anndata_state


@pytest.fixture
def untouched(pbmc_adata):
    """Yield pbmc_adata and check afterwards that nothing was written to it."""
    before = _anndata_state(pbmc_adata)
    yield pbmc_adata
    assert _anndata_state(pbmc_adata) == before


@pytest.fixture
def no_search(monkeypatch):
    """Fail the test if a kNN search or an affinity computation starts."""

    def boom(*args, **kwargs):
        raise AssertionError("heavy work started before the input was checked")

    from torchdr_sc.estimators import Embedder

    monkeypatch.setattr(Embedder, "_input_affinity", boom)
