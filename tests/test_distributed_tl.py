"""``tdr.tl`` under torchrun: 2 gloo processes on scanpy's pbmc68k_reduced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

sc = pytest.importorskip("scanpy")

WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    import scanpy as sc

    import torchdr_sc.tl as tl
    from torchdr_sc.distributed import rank_guard

    out = sys.argv[1]
    with rank_guard():
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        sc.settings.verbosity = 3
        adata = sc.datasets.pbmc68k_reduced()
        tl.umap(adata, maxiter=100, device="cpu", cache=True)
        tl.tsne(adata, max_iter=150, device="cpu", cache=True)
        tl.umap(adata, maxiter=100, device="cpu", key_added="again", cache=True)  # cache hit
        tl.umap(
            adata, maxiter=20, device="cpu", random_state=None, key_added="noseed", cache=True
        )
        res = {k: adata.obsm[k] for k in ("X_umap", "X_tsne", "again", "noseed")}
        res.update({k: adata.obsp[k].toarray() for k in adata.obsp if k.startswith("tdr_")})
        np.savez(f"{out}/rank{rank}.npz", **res)
        keys = {s: sorted(getattr(adata, s).keys()) for s in ("obsm", "obsp", "uns")}
        keys["noseed_random_state"] = int(adata.uns["noseed"]["params"]["random_state"])
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(keys, f)
        dist.barrier()
        dist.destroy_process_group()
    """
)


@pytest.fixture(scope="module")
def tl_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist_tl")
    script = tmp / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", "2", "--max-restarts", "0", str(script), str(tmp),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    arrays = [dict(np.load(tmp / f"rank{r}.npz")) for r in range(2)]
    keys = [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]
    return arrays, keys, done.stdout + done.stderr


@pytest.fixture(scope="module")
def single():
    """The same calls on one process."""
    import torchdr_sc.tl as tl

    adata = sc.datasets.pbmc68k_reduced()
    tl.umap(adata, maxiter=100, device="cpu", cache=True)
    tl.tsne(adata, max_iter=150, device="cpu", cache=True)
    tl.umap(adata, maxiter=100, device="cpu", key_added="again", cache=True)
    tl.umap(adata, maxiter=20, device="cpu", random_state=None, key_added="noseed", cache=True)
    return adata


@pytest.mark.parametrize("key", ["X_umap", "X_tsne", "again", "noseed"])
def test_every_rank_gets_the_same_result(tl_ranks, key):
    arrays, _, _ = tl_ranks
    assert arrays[0][key].shape == (700, 2)
    np.testing.assert_array_equal(arrays[0][key], arrays[1][key])


def test_every_rank_writes_the_keys_of_a_single_process(tl_ranks, single):
    _, keys, _ = tl_ranks
    for slot in ("obsm", "obsp", "uns"):
        assert keys[0][slot] == keys[1][slot] == sorted(getattr(single, slot).keys()), slot


def test_the_affinity_cache_holds_the_whole_p(tl_ranks, single):
    arrays, _, _ = tl_ranks
    cached = [k for k in single.obsp if k.startswith("tdr_")]
    assert len(cached) == 2  # UMAP's and the entropic one
    for key in cached:
        for rank in (0, 1):
            np.testing.assert_allclose(arrays[rank][key], single.obsp[key].toarray(), atol=1e-6)


def test_only_rank_zero_logs(tl_ranks):
    _, _, output = tl_ranks
    assert output.count("computing UMAP") == 3
    assert output.count("computing tSNE") == 1
    assert output.count("using the cached input affinity") == 2  # "again", "noseed"


def test_random_state_none_records_one_seed(tl_ranks):
    _, keys, _ = tl_ranks
    assert keys[0]["noseed_random_state"] == keys[1]["noseed_random_state"]
