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
