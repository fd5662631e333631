"""Embedding quality as reported by the demo and the tests (DESIGN.md section 5)."""

from __future__ import annotations

from typing import Any

import numpy as np


def knn_label_accuracy(embedding: Any, labels: Any, *, k: int = 10, folds: int = 5) -> float:
    """Mean ``folds``-fold cross-validated accuracy of a ``k``-NN classifier on ``embedding``.

    Parameters
    ----------
    embedding
        ``(n_cells, n_components)`` coordinates.
    labels
        ``(n_cells,)`` labels (e.g. ``adata.obs['bulk_labels']``).
    k
        Neighbours of the classifier.
    folds
        Stratified folds, in data order (no shuffling, so the value is deterministic).
    """
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    x = np.asarray(embedding, dtype=np.float64)
    y = np.asarray(labels).astype(str)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=k), x, y, cv=folds, n_jobs=1)
    return float(np.mean(scores))
