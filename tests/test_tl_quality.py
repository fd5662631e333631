"""Embedding quality on pbmc68k_reduced against scanpy's own UMAP and t-SNE.

Quality = 10-NN ``bulk_labels`` accuracy (mean 5-fold CV accuracy of a 10-NN classifier on
the 2-D embedding). Both sides run on the same ``sc.pp.neighbors`` graph with scanpy's
parameter values, passed by the same names: ``tdr.tl`` is a drop-in for ``sc.tl``.
"""

from __future__ import annotations

import anndata as ad
import pytest
import scanpy as sc

import torchdr_sc.tl as tl
from torchdr_sc.quality import knn_label_accuracy

MARGIN = 0.02
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def accuracies() -> dict[str, float]:
    adata = sc.datasets.pbmc68k_reduced()
    sc.pp.neighbors(adata)  # 15 neighbours: the graph both UMAPs read by default
    values = {
        "maxiter": 500,
        "negative_sample_rate": 5,
        "alpha": 1.0,
        "gamma": 1.0,
        "init_pos": "spectral",
    }
    sc.tl.umap(adata, key_added="sc_umap", **values)
    tl.umap(adata, key_added="tdr_umap", **values)
    assert adata.uns["tdr_umap"]["params"]["neighbors_key"] == "neighbors"
    sc.tl.tsne(adata, key_added="sc_tsne", perplexity=30, early_exaggeration=12)
    tl.tsne(adata, key_added="tdr_tsne", perplexity=30, early_exaggeration=12)
    out = {
        k: knn_label_accuracy(adata.obsm[k], adata.obs["bulk_labels"])
        for k in ("tdr_umap", "tdr_tsne", "sc_umap", "sc_tsne")
    }
    print("\n10-NN bulk_labels accuracy:", {k: round(v, 4) for k, v in out.items()})
    return out


def test_knn_label_accuracy_definition():
    adata: ad.AnnData = sc.datasets.pbmc68k_reduced()
    perfect = adata.obs["bulk_labels"].cat.codes.to_numpy()[:, None].repeat(2, 1) * 100.0
    assert knn_label_accuracy(perfect, adata.obs["bulk_labels"]) == 1.0


def test_umap_quality_at_least_scanpy(accuracies):
    assert accuracies["tdr_umap"] >= accuracies["sc_umap"] - MARGIN


def test_tsne_quality_at_least_scanpy(accuracies):
    assert accuracies["tdr_tsne"] >= accuracies["sc_tsne"] - MARGIN
