"""``tl`` as a drop-in for scanpy: its parameter names, the graph it reads, the keys it writes."""

from __future__ import annotations

import importlib
import inspect
import types

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import torch

import torchdr_sc as tdr
import torchdr_sc.tl as tl
from torchdr_sc.adata import log

knn_module = importlib.import_module("torchdr_sc.knn")

#: Parameters of scanpy's functions that ``tdr.tl`` does not take, each with its reason.
#: (Empty: every name is accepted; some values are refused with a hint, see below.)
NOT_ACCEPTED: dict[str, dict[str, str]] = {"umap": {}, "tsne": {}}

#: Defaults that differ from scanpy's on purpose, each with its reason.
OTHER_DEFAULTS = {
    ("umap", "neighbors_key"): "None: the graph under 'neighbors' when there is one, "
    "else a fresh search (scanpy's 'neighbors' requires sc.pp.neighbors first)",
    ("tsne", "learning_rate"): "'auto' (n / (4 * early_exaggeration), Belkina et al. 2019) "
    "instead of scikit-learn's old fixed 1000",
}


@pytest.fixture
def pbmc() -> ad.AnnData:
    return sc.datasets.pbmc68k_reduced()


@pytest.fixture
def searches(monkeypatch) -> list[int]:
    """Record the k of every kNN search the package starts."""
    calls: list[int] = []
    search = knn_module.knn

    def counting(x, k, *args, **kwargs):
        calls.append(int(k))
        return search(x, k, *args, **kwargs)

    monkeypatch.setattr(knn_module, "knn", counting)
    return calls


@pytest.mark.parametrize("name", ["umap", "tsne"])
def test_every_scanpy_parameter_is_accepted(name):
    ours = inspect.signature(getattr(tl, name)).parameters
    theirs = inspect.signature(getattr(sc.tl, name)).parameters
    missing = set(theirs) - set(ours) - set(NOT_ACCEPTED[name])
    assert not missing, f"tl.{name} lacks scanpy's {sorted(missing)}"
    for param_name, param in theirs.items():
        if param_name in NOT_ACCEPTED[name]:
            continue
        mine = ours[param_name]
        # positional-or-keyword where scanpy has it so (tsne's n_pcs), else keyword-only
        assert mine.kind == param.kind, param_name
        if (name, param_name) not in OTHER_DEFAULTS:
            assert mine.default == param.default, param_name


def test_one_name_per_meaning_in_tl_umap():
    ours = set(inspect.signature(tl.umap).parameters)
    assert not ours & {"max_iter", "lr", "n_negatives", "init", "repulsion_strength"}


def test_umap_reads_the_graph_of_sc_pp_neighbors(pbmc, searches):
    sc.pp.neighbors(pbmc, n_neighbors=30)
    lines: list[str] = []
    info = log.info

    def recording(msg, **kwargs):
        lines.append(msg)
        return info(msg, **kwargs)

    log.info = recording
    try:
        tl.umap(pbmc, maxiter=20)
    finally:
        log.info = info
    assert searches == []  # no kNN search: the stored graph is used
    params = pbmc.uns["umap"]["params"]
    assert params["neighbors_key"] == "neighbors"
    assert params["n_neighbors"] == 30
    assert any("found in adata.uns['neighbors'] (k=29)" in line for line in lines)


def test_recompute_neighbors_searches_afresh(pbmc, searches):
    tl.umap(pbmc, maxiter=20, n_neighbors=12, recompute_neighbors=True)
    assert searches == [11]
    assert "neighbors_key" not in pbmc.uns["umap"]["params"]
    with pytest.raises(ValueError, match=r"`neighbors_key='neighbors'` reads a stored graph and"):
        tl.umap(pbmc, neighbors_key="neighbors", recompute_neighbors=True)


def test_without_a_graph_umap_searches_15_neighbours(pbmc, searches):
    del pbmc.uns["neighbors"]
    tl.umap(pbmc, maxiter=20)
    assert searches == [14]
    assert pbmc.uns["umap"]["params"]["n_neighbors"] == 15


def test_a_graph_that_cannot_serve_is_an_error_not_a_new_search(pbmc, searches):
    before = set(pbmc.uns), set(pbmc.obsm)
    with pytest.raises(ValueError, match=r"needs k >= 19.*recompute_neighbors=True"):
        tl.umap(pbmc, n_neighbors=20)
    with pytest.raises(
        ValueError, match=r"computed on 'X_pca' \(50 columns\), not on the requested use_rep='X'"
    ):
        tl.umap(pbmc, use_rep="X")
    sc.pp.neighbors(pbmc, n_pcs=20)
    with pytest.raises(ValueError, match=r"'X_pca' \(20 columns\).*recompute_neighbors=True"):
        tl.umap(pbmc, n_pcs=30)
    # A graph that lost cells to a subset is searched afresh: tests/test_stale_graph.py.
    assert searches == []
    assert (set(pbmc.uns), set(pbmc.obsm)) == before


def test_umap_follows_the_graph_metric(pbmc, searches):
    sc.pp.neighbors(pbmc, n_neighbors=15, metric="cosine")
    tl.umap(pbmc, maxiter=20)
    assert searches == []
    assert pbmc.uns["umap"]["params"]["metric_in"] == "cosine"


def test_scanpy_preset_keys_are_followed(pbmc, monkeypatch):
    preset = types.SimpleNamespace(
        umap=types.SimpleNamespace(key_added="umap"), tsne=types.SimpleNamespace(key_added=None)
    )
    monkeypatch.setattr(sc.settings, "preset", preset, raising=False)
    tl.umap(pbmc, maxiter=20)
    tl.tsne(pbmc, max_iter=20)
    assert "umap" in pbmc.obsm
    assert "umap" in pbmc.uns
    assert "X_tsne" in pbmc.obsm  # key_added=None in the preset: scanpy 1.x keys
    tl.umap(pbmc, maxiter=20, key_added="mine")
    assert "mine" in pbmc.obsm


def test_init_pos_paga(pbmc):
    with pytest.raises(ValueError, match=r"`init_pos='paga'` needs a PAGA layout: run sc.tl.paga"):
        tl.umap(pbmc, init_pos="paga", maxiter=20)
    sc.tl.paga(pbmc, groups="bulk_labels")
    sc.pl.paga(pbmc, show=False)
    tl.umap(pbmc, init_pos="paga", maxiter=20)
    assert pbmc.uns["umap"]["params"]["init_pos"] == "paga"
    emb = pbmc.obsm["X_umap"]
    assert np.isfinite(emb).all()
    with pytest.raises(ValueError, match=r"gives 2-D positions; got n_components=3"):
        tl.umap(pbmc, init_pos="paga", n_components=3, maxiter=20)


def test_method_rapids_is_refused_with_a_hint(pbmc):
    with pytest.raises(ValueError, match=r"pass method='umap' and device='cuda'"):
        tl.umap(pbmc, method="rapids")


def test_n_jobs_sets_torch_threads_for_the_call(pbmc, monkeypatch):
    seen = []
    fit = tdr.UMAP.fit_transform

    def recording(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(tdr.UMAP, "fit_transform", recording)
    before = torch.get_num_threads()
    tl.umap(pbmc, maxiter=20, n_jobs=1)
    assert seen == [1]
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match=r"`n_jobs` must be None, a positive int"):
        tl.umap(pbmc, n_jobs=0)


def test_tsne_takes_scanpys_arguments(pbmc):
    tl.tsne(pbmc, 20, perplexity=15, metric="euclidean", learning_rate=200.0, max_iter=60)
    euclid = pbmc.obsm["X_tsne"].copy()
    params = pbmc.uns["tsne"]["params"]
    assert (params["n_pcs"], params["perplexity"], params["metric"]) == (20, 15, "euclidean")
    assert params["learning_rate"] == 200.0
    assert params["early_exaggeration"] == 12.0
    assert "lr" not in params
    assert "metric_in" not in params
    # scikit-learn's (scanpy's) 'euclidean' squares the distances: 'sqeuclidean' is the same
    tl.tsne(pbmc, 20, perplexity=15, metric="sqeuclidean", learning_rate=200.0, max_iter=60)
    np.testing.assert_array_equal(pbmc.obsm["X_tsne"], euclid)
    tl.tsne(pbmc, 20, perplexity=15, metric="cosine", learning_rate=200.0, max_iter=60)
    assert not np.array_equal(pbmc.obsm["X_tsne"], euclid)
    with pytest.raises(ValueError, match=r"`metric` must be one of 'cosine', 'euclidean'"):
        tl.tsne(pbmc, metric="chebyshev")
    tl.tsne(pbmc, use_fast_tsne=True, n_jobs=1, max_iter=20)  # accepted, ignored


def test_tsne_family_shares_scanpys_names():
    names = ("perplexity", "metric", "early_exaggeration", "learning_rate", "n_jobs", "n_pcs")
    for function in (tl.tsne, tl.infotsne, tl.largevis, tl.tsnekhorn):
        assert set(names) <= set(inspect.signature(function).parameters), function.__name__


def test_min_dist_may_equal_spread_as_in_umap_learn(pbmc):
    tl.umap(pbmc, min_dist=1.0, spread=1.0, maxiter=20)  # umap-learn accepts min_dist <= spread
    assert np.isfinite(pbmc.obsm["X_umap"]).all()
    with pytest.raises(ValueError, match=r"`min_dist` must be a float in \[0, 1\]; got 1.5"):
        tl.umap(pbmc, min_dist=1.5, spread=1.0)
