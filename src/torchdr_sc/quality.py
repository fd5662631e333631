"""Embedding quality: the two figures of DESIGN.md section 5, used by the demo, the tests
and the benchmarks alike.

- :func:`knn_label_accuracy`: mean cross-validated accuracy of a 10-nearest-neighbour
  classifier on the embedding (how well cell labels can be read off the picture);
- :func:`neighbourhood_preservation`: mean fraction of each point's input-space nearest
  neighbours that are among its embedding-space nearest neighbours (Lee & Verleysen,
  *Quality assessment of dimensionality reduction: rank-based criteria*, Neurocomputing
  2009; Kobak & Berens, *The art of using t-SNE for single-cell transcriptomics*, Nature
  Communications 2019).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def knn_label_accuracy(
    embedding: Any, labels: Any, *, k: int = 10, folds: int = 5, seed: int | None = None
) -> float:
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
        Stratified folds; fewer when the rarest label has fewer members (at least 2).
    seed
        ``None``: folds in data order, no shuffling (deterministic for a given order).
        An int: folds drawn at random with this seed (for samples of large data sets).

    Returns
    -------
    The accuracy, in ``[0, 1]``.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    x = np.asarray(embedding, dtype=np.float64)
    y = np.asarray(labels).astype(str)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    n_splits = max(2, min(folds, smallest)) if smallest >= 2 else folds
    shuffle = seed is not None
    cv = StratifiedKFold(n_splits=n_splits, shuffle=shuffle, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=k), x, y, cv=cv, n_jobs=1)
    return float(np.mean(scores))


def embedding_neighbors(embedding: Any, queries: Any, k: int) -> np.ndarray:
    """Exact ``k`` nearest neighbours of the rows ``queries`` among all rows of ``embedding``.

    The query itself is excluded. Computed in float64 with a KD-tree for up to 3
    dimensions and by brute force above, so that no ``|x|^2 - 2 x.y`` round-off reorders
    close neighbours.

    Returns
    -------
    ``(len(queries), k)`` int64 row indices.
    """
    from sklearn.neighbors import NearestNeighbors

    data = np.asarray(embedding, dtype=np.float64)
    queries = np.asarray(queries, dtype=np.int64)
    algorithm = "kd_tree" if data.shape[1] <= 3 else "brute"
    index = NearestNeighbors(n_neighbors=k + 1, algorithm=algorithm).fit(data)
    found = index.kneighbors(data[queries], return_distance=False)
    out = np.empty((len(queries), k), dtype=np.int64)
    for row, (query, neighbors) in enumerate(zip(queries, found, strict=True)):
        out[row] = neighbors[neighbors != query][:k]
    return out


def neighbourhood_preservation(input_neighbors: Any, embedding: Any, queries: Any) -> float:
    """Mean overlap of the input-space and embedding-space neighbourhoods of ``queries``.

    Parameters
    ----------
    input_neighbors
        ``(m, k)`` exact input-space neighbours of the ``queries`` (self excluded).
    embedding
        ``(n, n_components)`` embedding of all points.
    queries
        ``(m,)`` the query rows.

    Returns
    -------
    The mean fraction of shared neighbours, in ``[0, 1]``.
    """
    input_neighbors = np.asarray(input_neighbors)
    k = input_neighbors.shape[1]
    found = embedding_neighbors(embedding, queries, k)
    pairs = zip(input_neighbors, found, strict=True)
    hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in pairs]
    return float(np.mean(hits) / k)
