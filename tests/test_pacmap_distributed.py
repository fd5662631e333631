"""PACMAP under torchrun: 2 gloo processes give the one-process embedding, bit for bit.

Every process draws the same pairs (from the fit's seed) and sums the gradient of the rows
of its shard; the all-reduce adds each row's gradient to zeros, so every process takes the
one-process step. The data have no tied distances (``digits`` has many: the sharded kNN
search may order, hence keep, tied neighbours otherwise than the one-process search).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import torchdr_sc as tdr

#: Odd row count: shards of different sizes.
ROWS = 901
PARAMS = {"max_iter": 60, "iter_per_phase": 20, "device": "cpu", "random_state": 0}

WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    import torchdr_sc as tdr
    from torchdr_sc.distributed import rank_guard

    with rank_guard():
        dist.init_process_group("gloo")
        X = np.load(sys.argv[2])
        out = {{}}
        for compile in ("auto", False):
            est = tdr.PACMAP(compile=compile, **{params!r})
            out[str(compile)] = est.fit_transform(X)
        np.savez(f"{{sys.argv[1]}}/rank{{dist.get_rank()}}.npz", **out)
        dist.barrier()
        dist.destroy_process_group()
    """
)


def _data() -> np.ndarray:
    """Gaussian blobs without tied distances."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 20)) * 4
    return (rng.normal(size=(ROWS, 20)) + centres[np.arange(ROWS) % 6]).astype(np.float32)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Each rank's embeddings from one torchrun job of 2 gloo processes."""
    tmp = tmp_path_factory.mktemp("pacmap_dist")
    script = tmp / "worker.py"
    script.write_text(WORKER.format(params=PARAMS))
    np.save(tmp / "data.npy", _data())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", "2", "--max-restarts", "0", str(script), str(tmp), str(tmp / "data.npy"),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return [dict(np.load(tmp / f"rank{r}.npz")) for r in range(2)]


@pytest.mark.parametrize("compile", ["auto", "False"])
def test_two_processes_give_the_one_process_embedding(two_ranks, compile):
    r0, r1 = two_ranks
    np.testing.assert_array_equal(r0[compile], r1[compile])
    one = tdr.PACMAP(compile=compile == "auto" and "auto", **PARAMS).fit_transform(_data())
    np.testing.assert_array_equal(r0[compile], one)
