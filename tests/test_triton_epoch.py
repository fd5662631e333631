"""The fused Triton epoch (``objective/triton_epoch.py``) and its selection on CUDA.

Without a GPU the kernel runs through Triton's interpreter: ``TRITON_INTERPRET=1`` must be
set before Triton is imported, so those checks run in a fresh interpreter (one for all
cases; with CUDA, a second one runs them compiled on the GPU) and compare the kernel's
gradient with a plain PyTorch reference (the active edges of
:meth:`EdgeSchedule.active_mask`, the negatives of :func:`edge_negatives`, then
``pair_terms`` and ``scatter_pair_terms``) and with the CPU path of the estimators on the
same seed (``cpu_path_*``: the same negatives, so the same gradient up to rounding). A
second fresh interpreter compiles the kernel for an H100/H200 (sm_90) with Triton's own
compiler, which needs no GPU and catches what the interpreter lets through. Both skip when
Triton is not installed; the selection and fallback tests need no Triton.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from torchdr_sc.affinity import SparseAffinity
from torchdr_sc.objective import epoch as epoch_mod
from torchdr_sc.objective import triton_epoch
from torchdr_sc.objective.epoch import SampledEpoch, resolve_epoch_path
from torchdr_sc.objective.sampled import SampledKernel

#: Runs every kernel case on the device named by its argument (``cpu``: through the
#: interpreter); prints one JSON line per case.
KERNEL_CASES = textwrap.dedent(
    """
    import json
    import sys
    import torch
    from torchdr_sc.affinity import SparseAffinity
    from torchdr_sc.objective.epoch import SampledEpoch
    from torchdr_sc.objective.pairs import edge_negatives, hash_key, pair_terms
    from torchdr_sc.objective.sampled import EdgeSchedule, SampledKernel, scatter_pair_terms
    from torchdr_sc.objective.triton_epoch import fused_epoch_gradient, triton_available

    DEVICE = torch.device(sys.argv[1])
    assert triton_available(DEVICE)

    def affinity(n, k, tied_rows=0, seed=0):
        gen = torch.Generator().manual_seed(seed)
        rows = torch.arange(n).repeat_interleave(k)
        cols = (rows + torch.randint(1, n, (n * k,), generator=gen)) % n
        w = torch.rand(n * k, generator=gen)
        w[: tied_rows * k] = 0.3  # equal weights of one head: lockstep phases
        return SparseAffinity(rows.to(DEVICE), cols.to(DEVICE), w.to(DEVICE), n)

    def reference(z, s, key, consts, epoch, kind, m, discard):
        n = z.shape[0]
        on = s.active_mask(epoch).nonzero().view(-1)
        heads, tails = s.heads[on].long(), s.tails[on].long()
        negs = [edge_negatives(key, heads, tails, j, m, n, discard_tails=discard) for j in range(m)]
        g_att, g_head = pair_terms(list(z.T.contiguous()), heads, tails, negs, consts, kind)
        return scatter_pair_terms(z, heads, tails, g_att, g_head), on.numel()

    CASES = [  # name, kind, (a, b, repulsion, clip, exaggeration), n, k, tied, d, m, discard, epoch
        ("umap", "umap", (1.58, 0.9, 1.0, 4.0, 2.0), 300, 10, 0, 2, 5, False, 3),
        ("umap_phase_clip", "umap", (1.58, 0.9, 0.7, 1.0, 1.0), 300, 10, 20, 3, 3, True, 5),
        ("umap_16d_int64", "umap", (0.58, 1.3, 1.0, 4.0, 1.0), 300, 10, 0, 16, 5, False, 2**24 + 3),
        ("umap_tiny_wrap", "umap", (1.58, 0.9, 1.0, 4.0, 1.0), 8, 7, 0, 2, 9, True, 4),
        ("cauchy_phase", "cauchy", (1.0, 1.0, 1.0, 5.0, 1.0), 300, 10, 20, 2, 5, True, 7),
        ("cauchy_5d_clip", "cauchy", (1.0, 1.0, 7.0, 0.3, 1.5), 300, 10, 0, 5, 7, False, 6),
    ]
    for name, kind, values, n, k, tied, d, m, discard, epoch in CASES:
        P = affinity(n, k, tied)
        s = EdgeSchedule(P)
        if name.endswith("int64"):
            s.heads, s.tails = s.heads.long(), s.tails.long()
        gen = torch.Generator().manual_seed(1)
        z = (torch.randn(n, d, generator=gen) * 3).to(DEVICE)
        consts = torch.tensor(values, dtype=torch.float32, device=DEVICE)
        key = hash_key(11, epoch, DEVICE)
        got = fused_epoch_gradient(
            z, s, key, consts, epoch=epoch, kind=kind, n_negatives=m, discard_tails=discard
        )
        ref, n_active = reference(z, s, key, consts, epoch, kind, m, discard)
        row = {"case": name, "err": float((got - ref).abs().max()), "scale": float(ref.abs().max())}
        unclipped = consts.clone()
        unclipped[3] = float("inf")
        free, _ = reference(z, s, key, unclipped, epoch, kind, m, discard)
        clipped = not torch.allclose(free, ref)  # some pair term hit the clip
        row.update(n_active=n_active, phase=s.phase is not None, clipped=clipped)
        print(json.dumps(row))

    # the estimators' entry point, forced onto the kernel on CPU, with a crowding scale
    P = affinity(300, 10, 20)
    kernel = SampledKernel("umap", a=1.58, b=0.9)
    epoch = SampledEpoch(
        P, kernel, 5, seed=11, discard_tails=True, crowded_terms=4, compile="auto", device=DEVICE
    )
    assert epoch.step_scale is not None
    selected = epoch.path == "triton"  # compile='auto' picks the kernel on CUDA, never on CPU
    epoch._path = "triton"
    z = (torch.randn(300, 2, generator=torch.Generator().manual_seed(2)) * 3).to(DEVICE)
    got = epoch.gradient(z, 5, exaggeration=2.0)
    consts = torch.tensor([1.58, 0.9, 1.0, 4.0, 2.0], device=DEVICE)
    key = hash_key(11, 5, DEVICE)
    ref, n_active = reference(z, epoch.schedule, key, consts, 5, "umap", 5, True)
    ref = ref * epoch.step_scale.float()[:, None]
    row = {"case": "sampled_epoch", "err": float((got - ref).abs().max()), "scale": float(ref.abs().max())}
    row.update(n_active=n_active, phase=True, fused=epoch.path == "triton", selected=selected)
    print(json.dumps(row))

    # the same seed on the CPU path (compile=False: eager PyTorch, the same bits as the C
    # loop) and on the kernel: the same negatives, so the same gradient up to float rounding
    for kind, kernel in (("umap", SampledKernel("umap", a=1.58, b=0.9)),
                         ("cauchy", SampledKernel("largevis", repulsion=7.0, clip=5.0))):
        P = affinity(400, 10)
        z = (torch.randn(400, 2, generator=torch.Generator().manual_seed(4)) * 3).to(DEVICE)
        cpu_path = SampledEpoch(P, kernel, 5, seed=3, discard_tails=True, compile=False, device=DEVICE)
        ref = cpu_path.gradient(z, 9, exaggeration=1.5)
        fused = SampledEpoch(P, kernel, 5, seed=3, discard_tails=True, compile="auto", device=DEVICE)
        fused._path = "triton"
        got = fused.gradient(z, 9, exaggeration=1.5)
        row = {"case": f"cpu_path_{kind}", "err": float((got - ref).abs().max()),
               "scale": float(ref.abs().max()), "n_active": int(cpu_path.schedule.active(9)[0].numel()),
               "fused": fused.path == "triton"}
        print(json.dumps(row))
    """
)

CASES = (
    "umap",
    "umap_phase_clip",
    "umap_16d_int64",
    "umap_tiny_wrap",
    "cauchy_phase",
    "cauchy_5d_clip",
    "sampled_epoch",
    "cpu_path_umap",
    "cpu_path_cauchy",
)

#: Compiles the kernel for sm_90 with Triton's compiler (no GPU needed), one line per variant.
COMPILED = textwrap.dedent(
    """
    import json
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from torchdr_sc.objective import triton_epoch as te

    VARIANTS = [  # KIND, D, M, HAS_PHASE, DISCARD, index type
        (0, 2, 5, False, False, "i32"),
        (0, 16, 5, True, True, "i64"),
        (1, 3, 5, True, True, "i32"),
        (1, 2, 5, False, False, "i64"),
    ]
    for kind, d, m, has_phase, discard, index in VARIANTS:
        pointers = {"z_ptr": "*fp32", "grad_ptr": "*fp32", "heads_ptr": f"*{index}",
                    "tails_ptr": f"*{index}", "rate_ptr": "*i32", "phase_ptr": "*i32",
                    "key_ptr": "*i64", "mix_ptr": "*i64", "consts_ptr": "*fp32",
                    "n_edges": index, "n": index, "epoch": "i32"}
        constexprs = {"D": d, "DP": triton.next_power_of_2(d), "M": m, "KIND": kind,
                      "HAS_PHASE": has_phase, "DISCARD": discard, "BLOCK": te.BLOCK_EDGES,
                      "RATE_ONE": 1 << 24, "EPS": 1e-3}
        signature = {**pointers, **dict.fromkeys(constexprs, "constexpr")}
        src = ASTSource(te._epoch_kernel, signature, constexprs)
        out = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                             options={"num_warps": te.NUM_WARPS})
        ptx = out.asm["ptx"]
        # atomic adds whose result is unused: atom.global, or red.global (newer Triton)
        atomics = ptx.count("atom.global") + ptx.count("red.global")
        print(json.dumps({"kind": kind, "d": d, "atomics": atomics,
                          "cubin": len(out.asm.get("cubin", b""))}))
    """
)


def _run(script: str, tmp_path, interpret: bool, *args: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory) -> dict[str, dict]:
    """The kernel against the reference on every case, through Triton's interpreter."""
    pytest.importorskip("triton")
    rows = _run(KERNEL_CASES, tmp_path_factory.mktemp("interpret"), True, "cpu")
    return {r["case"]: r for r in rows}


@pytest.fixture(scope="module")
def on_cuda(tmp_path_factory) -> dict[str, dict]:
    """The same cases compiled by Triton and run on the GPU."""
    pytest.importorskip("triton")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rows = _run(KERNEL_CASES, tmp_path_factory.mktemp("cuda"), False, "cuda")
    return {r["case"]: r for r in rows}


def _check_case(row: dict) -> None:
    assert row["n_active"] > 0
    assert row["err"] <= 1e-4 * max(1.0, row["scale"]), row


@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_the_torch_reference(interpreted, case):
    _check_case(interpreted[case])


@pytest.mark.parametrize("case", CASES)
def test_compiled_kernel_matches_the_torch_reference_on_cuda(on_cuda, case):
    _check_case(on_cuda[case])


def test_the_cases_cover_phases_clipping_and_the_sampled_epoch(interpreted):
    assert interpreted["cauchy_phase"]["phase"]
    assert interpreted["umap_phase_clip"]["clipped"]
    assert interpreted["cauchy_5d_clip"]["clipped"]
    assert interpreted["sampled_epoch"]["fused"]  # no fallback happened
    assert not interpreted["sampled_epoch"]["selected"]  # CPU: never by default


def test_cuda_auto_runs_the_kernel_by_default(on_cuda):
    assert on_cuda["sampled_epoch"]["selected"]
    assert on_cuda["sampled_epoch"]["fused"]


def test_kernel_compiles_for_sm90_without_a_gpu(tmp_path):
    pytest.importorskip("triton")
    pytest.importorskip("triton.backends.nvidia")
    rows = _run(COMPILED, tmp_path, interpret=False)
    assert len(rows) == 4
    for row in rows:
        assert row["atomics"] > 0, row


def test_cuda_auto_selects_triton_when_available(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(epoch_mod, "triton_available", lambda device: True)
    assert resolve_epoch_path("auto", cuda) == "triton"
    assert resolve_epoch_path(False, cuda) == "eager"
    assert resolve_epoch_path(True, cuda) == "compiled"
    # CPU never takes the kernel, even where Triton's interpreter could run it
    assert resolve_epoch_path("auto", cpu) == "native"
    monkeypatch.setattr(epoch_mod, "triton_available", lambda device: False)
    assert resolve_epoch_path("auto", cuda) == "eager"
    assert resolve_epoch_path(True, cuda) == "compiled"


def test_triton_available_needs_triton_and_cuda(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not triton_epoch.triton_available("cpu")
    if triton_epoch.triton is None:
        assert not triton_epoch.triton_available("cuda")
    else:
        assert triton_epoch.triton_available("cuda")


def _affinity(n=60, k=6):
    gen = torch.Generator().manual_seed(0)
    rows = torch.arange(n).repeat_interleave(k)
    cols = (rows + torch.randint(1, n, (n * k,), generator=gen)) % n
    return SparseAffinity(rows, cols, torch.rand(n * k, generator=gen), n)


def test_failed_kernel_warns_once_and_runs_eagerly(monkeypatch, caplog):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("PTX assembly failed")

    monkeypatch.setattr(triton_epoch, "fused_epoch_gradient", broken)
    epoch = SampledEpoch(_affinity(), SampledKernel("umap", a=1.58, b=0.9), 5, seed=0)
    eager = SampledEpoch(_affinity(), SampledKernel("umap", a=1.58, b=0.9), 5, seed=0)
    epoch._path = "triton"  # as on CUDA with Triton
    z = torch.randn(60, 2, generator=torch.Generator().manual_seed(1))
    with caplog.at_level("WARNING", logger="torchdr_sc"):
        first, second = epoch.gradient(z, 0), epoch.gradient(z, 1)
    assert len(calls) == 1
    assert epoch.path == "eager"
    assert caplog.text.count("running the epoch eagerly") == 1
    # the fallback is the eager path, the same negatives: the same gradients
    assert torch.equal(first, eager.gradient(z, 0))
    assert torch.equal(second, eager.gradient(z, 1))


def test_unsupported_embeddings_run_eagerly(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the kernel was called")

    monkeypatch.setattr(triton_epoch, "fused_epoch_gradient", never)
    P = _affinity()
    for z in (torch.randn(60, 2, dtype=torch.float64), torch.randn(60, 17)):
        epoch = SampledEpoch(P, SampledKernel("largevis"), 5, seed=0)
        epoch._path = "triton"
        assert torch.isfinite(epoch.gradient(z, 0)).all()
        assert epoch.path == "triton"  # still enabled: only this embedding is not supported
