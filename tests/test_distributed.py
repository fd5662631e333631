"""Distributed embeddings: 2 gloo processes under torchrun against 1 process.

One torchrun job (module fixture) runs every case on 2 CPU processes and saves each rank's
results; the tests compare the ranks with each other and with a single-process run of the
same estimator, data and seed in the test process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import torchdr_sc as tdr
from torchdr_sc.distributed import DistContext, resolve_distributed, shard_of
from torchdr_sc.quality import knn_label_accuracy, radius_correlation

#: Methods run under torchrun: name -> (estimator, parameters, rows of digits used). Odd
#: row counts give shards of different sizes.
METHODS = {
    "umap": (tdr.UMAP, {"max_iter": 200}, 1797),
    "densmap": (tdr.UMAP, {"max_iter": 200, "densmap": True, "dens_frac": 0.5}, 1797),
    "infotsne": (tdr.InfoTSNE, {"max_iter": 200}, 1797),
    "largevis": (tdr.LargeVis, {"max_iter": 200}, 1797),
    "tsne": (tdr.TSNE, {"max_iter": 250, "early_exaggeration_iter": 100}, 1797),
    "tsne_fft": (
        tdr.TSNE,
        {"max_iter": 250, "early_exaggeration_iter": 100, "repulsion": "fft"},
        1797,
    ),
    "sne": (tdr.SNE, {"max_iter": 250, "early_exaggeration_iter": 100}, 899),
    "densne": (
        tdr.TSNE,
        {"max_iter": 250, "early_exaggeration_iter": 100, "densne": True, "dens_frac": 0.4},
        1797,
    ),
}

WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset

    import torchdr_sc as tdr
    from torchdr_sc.distributed import rank_guard

    out = sys.argv[1]
    methods = {methods!r}
    with rank_guard():
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        X = load_digits().data.astype(np.float32)
        res = {{}}
        for name, params in methods.items():
            cls, rows = getattr(tdr, params.pop("cls")), params.pop("rows")
            res[name] = cls(random_state=0, device="cpu", **params).fit_transform(X[:rows])
            res[name + "_step1"] = cls(
                random_state=0, device="cpu", **{{**params, "max_iter": 1}}
            ).fit_transform(X[:rows])
        res["none_seed"] = tdr.UMAP(
            random_state=None, init="normal", max_iter=20, device="cpu"
        ).fit_transform(X)
        loader = DataLoader(TensorDataset(torch.from_numpy(X)), batch_size=256)
        res["loader"] = tdr.UMAP(
            random_state=0, init="pca", max_iter=200, device="cpu"
        ).fit_transform(loader).numpy()
        res["tsne_loader"] = tdr.TSNE(
            random_state=0, max_iter=250, early_exaggeration_iter=100, device="cpu"
        ).fit_transform(loader).numpy()
        est = tdr.UMAP(random_state=0, max_iter=5, device="cpu", distributed=False)
        res["alone"] = est.fit_transform(X[:300])
        P = tdr.TSNE(random_state=0, max_iter=1, device="cpu").fit(X).affinity_in_.to_scipy()
        P.sort_indices()
        res["P_data"], res["P_indices"], res["P_indptr"] = P.data, P.indices, P.indptr
        np.savez(f"{{out}}/rank{{rank}}.npz", **res)
        dist.barrier()
        dist.destroy_process_group()
    """
)


def torchrun(script: Path, nproc: int, *args: str, timeout: float = 600) -> tuple:
    """Run ``script`` under torchrun on ``nproc`` gloo processes; (completed, seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", str(nproc), "--max-restarts", "0", str(script), *args,
    ]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return done, time.perf_counter() - t0


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Every rank's results of the torchrun job (2 gloo processes)."""
    tmp = tmp_path_factory.mktemp("dist")
    methods = {k: {"cls": c.__name__, "rows": n, **p} for k, (c, p, n) in METHODS.items()}
    script = tmp / "worker.py"
    script.write_text(WORKER.format(methods=methods))
    done, _ = torchrun(script, 2, str(tmp))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return [dict(np.load(tmp / f"rank{r}.npz")) for r in range(2)]


@pytest.fixture(scope="module")
def digits_data():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target


@pytest.mark.parametrize("name", [*METHODS, "none_seed", "loader", "tsne_loader", "alone"])
def test_every_rank_holds_the_same_embedding(two_ranks, name):
    r0, r1 = two_ranks
    assert r0[name].shape == r1[name].shape
    np.testing.assert_array_equal(r0[name], r1[name])


@pytest.mark.parametrize("name", list(METHODS))
def test_ranks_agree_after_the_first_step(two_ranks, name):
    np.testing.assert_array_equal(two_ranks[0][name + "_step1"], two_ranks[1][name + "_step1"])


@pytest.mark.parametrize("name", list(METHODS))
def test_two_processes_match_one_process_quality(two_ranks, digits_data, name):
    X, y = digits_data
    cls, params, rows = METHODS[name]
    single = cls(random_state=0, device="cpu", **params).fit_transform(X[:rows])
    acc_1 = knn_label_accuracy(single, y[:rows])
    acc_2 = knn_label_accuracy(two_ranks[0][name], y[:rows])
    print(f"{name}: 10-NN accuracy 1 process {acc_1:.4f}, 2 processes {acc_2:.4f}")
    assert acc_1 > 0.85
    assert abs(acc_2 - acc_1) <= 0.02, (name, acc_1, acc_2)


@pytest.mark.parametrize("name", ["densmap", "densne"])
def test_two_processes_keep_the_densities_as_one_process(two_ranks, digits_data, name):
    """densMAP's and den-SNE's terms sum each rank's rows with the radii gathered from all
    ranks."""
    X, _ = digits_data
    cls, params, rows = METHODS[name]
    single = cls(random_state=0, device="cpu", **params).fit_transform(X[:rows])
    one = radius_correlation(X[:rows], single)
    two = radius_correlation(X[:rows], two_ranks[0][name])
    print(f"{name}: radius correlation 1 process {one:.3f}, 2 processes {two:.3f}")
    assert one > 0.7
    assert abs(two - one) <= 0.05


def test_row_sharded_p_gives_the_one_process_p(two_ranks, digits_data):
    # TSNE keeps P sharded by rows: each rank searches, calibrates and symmetrises its own
    # rows (an all-to-all brings it the entries of P^T); together the blocks are the
    # one-process P (the kNN graphs may differ between duplicated digits: ties)
    X, _ = digits_data
    single = tdr.TSNE(random_state=0, max_iter=1, device="cpu").fit(X).affinity_in_.to_scipy()
    blocks = []
    for r, rank in enumerate(two_ranks):
        P = sp.csr_matrix((rank["P_data"], rank["P_indices"], rank["P_indptr"]), shape=single.shape)
        shard = shard_of(single.shape[0], r, 2)
        held = np.flatnonzero(np.diff(P.indptr))
        assert held.min() >= shard.start  # its own rows only
        assert held.max() < shard.stop
        blocks.append(P)
    assert abs(blocks[0] + blocks[1] - single).sum() < 1e-3 * single.sum()


def test_rows_calibrated_by_blocks_equal_the_whole_calibration(digits_data):
    from torchdr_sc.affinity import EntropicAffinity
    from torchdr_sc.knn import knn

    X, _ = digits_data
    graph = knn(torch.as_tensor(X), 90)
    aff = EntropicAffinity(perplexity=30)
    whole = aff.from_knn(graph).to_scipy()
    blocks = torch.cat([aff.rows_from_knn(graph, 0, 899), aff.rows_from_knn(graph, 899, 1797)])
    from torchdr_sc.affinity import SparseAffinity

    pieced = SparseAffinity.from_knn(graph.indices, blocks).to_scipy()
    assert (whole != pieced).nnz == 0


def test_distributed_loader_matches_in_memory_quality(two_ranks, digits_data):
    X, y = digits_data
    single = tdr.UMAP(random_state=0, init="pca", max_iter=200, device="cpu").fit_transform(X)
    assert (
        abs(knn_label_accuracy(two_ranks[0]["loader"], y) - knn_label_accuracy(single, y)) <= 0.02
    )


def test_streamed_tsne_keeps_p_rows_of_the_gathered_graph(two_ranks, digits_data):
    # a streamed input gathers the kNN graph; P is then built from this rank's rows of it
    _, y = digits_data
    sharded = knn_label_accuracy(two_ranks[0]["tsne"], y)
    assert abs(knn_label_accuracy(two_ranks[0]["tsne_loader"], y) - sharded) <= 0.02


def test_distributed_false_runs_alone_under_torchrun(two_ranks, digits_data):
    X, _ = digits_data
    est = tdr.UMAP(random_state=0, max_iter=5, device="cpu", distributed=False)
    np.testing.assert_allclose(two_ranks[0]["alone"], est.fit_transform(X[:300]), atol=1e-4)


def test_distributed_true_without_process_group_shows_torchrun():
    with pytest.raises(RuntimeError, match=r"torchrun --nproc_per_node=2 your_script\.py"):
        resolve_distributed(True, 10)
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with pytest.raises(RuntimeError, match=r"needs an initialised torch\.distributed"):
        tdr.UMAP(distributed=True, max_iter=2).fit_transform(X)


def test_auto_without_process_group_is_one_process():
    ctx = resolve_distributed("auto", 11)
    assert (ctx.rank, ctx.world_size, ctx.active) == (0, 1, False)
    assert (ctx.shard.start, ctx.shard.stop) == (0, 11)


@pytest.mark.parametrize(("n", "world"), [(10, 3), (1797, 2), (5, 4), (7, 1)])
def test_shards_cover_the_rows_once(n, world):
    shards = [shard_of(n, r, world) for r in range(world)]
    rows = np.concatenate([np.arange(s.start, s.stop) for s in shards])
    np.testing.assert_array_equal(rows, np.arange(n))
    sizes = [s.stop - s.start for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_all_gather_rows_rejects_a_wrong_block():
    ctx = DistContext(0, 2, shard_of(9, 0, 2))
    with pytest.raises(ValueError, match=r"rank 0 holds 5 rows but owns 4 \(rows 0:4 of 9\)"):
        ctx.all_gather_rows(torch.zeros(5, 2), 9)


FAILING = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    import torch.distributed as dist

    import torchdr_sc as tdr
    from torchdr_sc.distributed import rank_guard

    guard = sys.argv[1] == "guard"
    dist.init_process_group("gloo")
    X = np.random.default_rng(0).normal(size=(400, 8)).astype(np.float32)
    if dist.get_rank() == 1:
        X[:3, 0] = np.nan  # rank 1 fails validation; rank 0 waits in the kNN all-gather
    if guard:
        with rank_guard():
            tdr.UMAP(max_iter=50, device="cpu").fit_transform(X)
    else:
        tdr.UMAP(max_iter=50, device="cpu").fit_transform(X)
    print("finished", dist.get_rank(), flush=True)
    """
)


@pytest.mark.parametrize("mode", ["guard", "plain"])
def test_a_failing_rank_ends_the_job(tmp_path, mode):
    script = tmp_path / "fail.py"
    script.write_text(FAILING)
    done, seconds = torchrun(script, 2, mode, timeout=240)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert seconds < 180
    assert "finished" not in done.stdout
    assert "NaN or inf values in 3 of 400 rows" in out
    if mode == "guard":
        assert "torchdr-sc: rank 1 of 2 failed: ValueError" in out
    else:  # torchrun's own report names the failed rank
        assert "rank      : 1" in out or "rank: 1" in out


def _active_edges(schedule, epoch: int) -> set:
    heads, tails = schedule.active(epoch)
    return set(zip(heads.tolist(), tails.tolist(), strict=True))


@pytest.mark.parametrize(
    "cls",
    [
        tdr.UMAP,
        tdr.LargeVis,
    ],
)
def test_sharded_edge_schedules_partition_the_single_process_schedule(digits_data, cls):
    from torchdr_sc.objective.sampled import EdgeSchedule

    X, _ = digits_data
    est = cls(random_state=0, max_iter=1, device="cpu")
    est.fit_transform(X)
    P = est.affinity_in_
    full = EdgeSchedule(P)
    parts = [EdgeSchedule(P, (s.start, s.stop)) for s in (shard_of(P.n, r, 4) for r in range(4))]
    for epoch in (0, 3, 17):
        union = set().union(*(_active_edges(p, epoch) for p in parts))
        assert union == _active_edges(full, epoch)


def test_init_from_env_needs_torchrun_variables(monkeypatch):
    from torchdr_sc.distributed import init_from_env

    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match=r"no torchrun environment \(RANK, WORLD_SIZE, "):
        init_from_env("cpu")


def test_failure_message_names_the_rank(monkeypatch):
    from torchdr_sc.distributed import failure_message

    monkeypatch.setenv("WORLD_SIZE", "4")
    text = failure_message(ValueError("bad rows"), 3)
    assert text == "rank 3 of 4 failed: ValueError: bad rows"
