"""COSNE under torchrun: 2 gloo processes hold one embedding, close to the one-process one.

Each process computes the attraction of its rows' edges, the repulsion of the pairs whose
first point is in its rows and the h-loss of its rows; the gradients and the normaliser are
summed across processes. The sums group the pairs otherwise than one process does, so the
embedding equals the one-process embedding up to rounding (not bit for bit), and every
process holds the same one.
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
ROWS = 401
PARAMS = {"max_iter": 40, "early_exaggeration_iter": 20, "device": "cpu", "random_state": 0}

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
        z = tdr.COSNE(perplexity=20, **{params!r}).fit_transform(X)
        np.save(f"{{sys.argv[1]}}/rank{{dist.get_rank()}}.npy", z)
        dist.barrier()
        dist.destroy_process_group()
    """
)


def _data() -> np.ndarray:
    """Gaussian blobs without tied distances, squared norms of a few units."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 20)) * 4
    x = rng.normal(size=(ROWS, 20)) + centres[np.arange(ROWS) % 6]
    return (x / 6).astype(np.float32)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Each rank's embedding from one torchrun job of 2 gloo processes."""
    tmp = tmp_path_factory.mktemp("cosne_dist")
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
    return [np.load(tmp / f"rank{r}.npy") for r in range(2)]


def test_two_processes_hold_one_embedding_close_to_one_process(two_ranks):
    r0, r1 = two_ranks
    np.testing.assert_array_equal(r0, r1)
    assert float(np.linalg.norm(r0, axis=1).max()) < 1.0
    one = tdr.COSNE(perplexity=20, **PARAMS).fit_transform(_data())
    print("largest difference from one process:", float(np.abs(r0 - one).max()))
    np.testing.assert_allclose(r0, one, atol=1e-4)
