"""A diverging optimisation stops with an error naming the learning rate; nothing is written."""

from __future__ import annotations

import numpy as np
import pytest

import torchdr_sc as tdr


def test_diverging_tsne_raises_naming_the_learning_rate(blobs):
    x, _ = blobs
    with pytest.raises(FloatingPointError, match=r"diverged.*learning rate `lr` \(got 1e\+30\)"):
        tdr.TSNE(lr=1e30, max_iter=20, random_state=0, repulsion="exact").fit_transform(x)


def test_diverging_tl_call_leaves_the_anndata_untouched(blobs):
    ad = pytest.importorskip("anndata")
    x, _ = blobs
    adata = ad.AnnData(np.asarray(x, dtype=np.float32))
    before = (set(adata.obsm), set(adata.obsp), set(adata.uns))
    # the message names the learning rate by the tl function's (scanpy's) name
    with pytest.raises(FloatingPointError, match=r"diverged.*`learning_rate` \(got 1e\+30\)"):
        tdr.tl.tsne(adata, learning_rate=1e30, max_iter=20, perplexity=10)
    assert (set(adata.obsm), set(adata.obsp), set(adata.uns)) == before
