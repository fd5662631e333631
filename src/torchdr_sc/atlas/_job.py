"""One process's part of a ``torchdr-sc embed`` job.

Every process (one, or each ``torchrun`` worker) reads the input's skeleton, runs the same
``tdr.tl.<method>`` call (which shards the work across the process group when there is
one) and ends with the same result; rank 0 alone writes the output and prints the summary.
When the representation is ``X`` itself, it is streamed from disk by row chunks into the
estimator and the results are recorded exactly as ``tl`` records them.

No heavy package is imported with this module: numpy, torch, anndata and scanpy are
imported by the functions that need them, so the command line's argument checks answer at once.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._io import InputError, InputInfo, open_skeleton, write_output
from ._space import reporting_write_errors
from .methods import METHODS, SHARDED


@dataclass
class JobSpec:
    """Everything a process needs to run the job (JSON-serialisable, sent to workers).

    With several processes the launcher sets ``error_dir`` (the job's folder: failure
    reports, rank 0's summary) and ``staging`` (where rank 0 writes the output, which the
    launcher moves to ``output`` once every process has succeeded).
    """

    input: str
    output: str
    method: str
    use_rep: str
    n_pcs: int | None = None
    neighbors_key: str | None = None
    key_added: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    overwrite: bool = False
    save_affinity: bool = False
    progress: bool = False
    verbose: bool = False
    nproc: int = 1
    timeout: float = 1800.0
    error_dir: str | None = None
    staging: str | None = None
    recompute_neighbors: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return asdict(self)


def tl_function(method: str) -> Any:
    """The ``tdr.tl`` function of ``method``."""
    from .. import tl

    return getattr(tl, METHODS[method][0])


def job_method(method: str) -> Any:
    """How the job names ``method``'s results: as ``tl.<method>`` does (scanpy's names)."""
    from ..adata import Method

    names = tl_function(method).scanpy_names
    return Method(METHODS[method][0], METHODS[method][2], names)


def build_estimator(method: str, params: dict[str, Any], device: str) -> Any:
    """The estimator ``tl.<method>`` would build with ``params``, parameters checked.

    Raises
    ------
    InputError
        An unknown parameter or an invalid value.
    """
    from .. import estimators
    from ..adata import build_estimator as build

    try:
        return build(
            tl_function(method),
            getattr(estimators, METHODS[method][1]),
            {**params, "device": device},
        )
    except TypeError as err:  # an unknown parameter
        msg = f"--param {err}"
        raise InputError(msg) from err
    except ValueError as err:
        raise InputError(str(err)) from err


def say(text: str) -> None:
    """Print a progress line (rank 0 only)."""
    from ..distributed import is_rank_zero

    if is_rank_zero():
        print(f"torchdr-sc embed: {text}", flush=True)


def _snapshot(adata: Any) -> dict[str, dict[str, int]]:
    return {slot: {k: id(v) for k, v in getattr(adata, slot).items()} for slot in _SLOTS}


_SLOTS = ("obsm", "obsp", "uns")


def _changes_since(adata: Any, before: dict[str, dict[str, int]]) -> list[tuple[str, str, Any]]:
    """``(slot, key, value)`` of every element added or replaced since ``before``."""
    out = []
    for slot in _SLOTS:
        for key, value in getattr(adata, slot).items():
            if before[slot].get(key) != id(value):
                out.append((slot, key, value))
    return out


def _streamed_changes(adata: Any, x: Any, spec: JobSpec) -> list[tuple[str, str, Any]]:
    """Embed the on-disk ``X`` by row chunks; record the results in ``tl``'s layout.

    ``obsm[key]`` (float32), ``uns[key] = {'params', 'timings', 'n_iter'}`` and, with
    ``--save-affinity``, the affinity in ``obsp`` described in ``uns['tdr_affinities']``
    under the key and fingerprint ``tl`` would use for ``use_rep='X'``.
    """
    import numpy as np
    import torch

    from ..adata import cache, results_changes, streamed_fingerprint
    from ..distributed import is_rank_zero
    from ..streaming import Chunked

    est = build_estimator(spec.method, spec.params, spec.device)
    est.set_params(progress_bar=spec.progress and is_rank_zero(), verbose=spec.verbose)
    chunked = Chunked(x)
    threads = torch.get_num_threads()  # recorded as n_jobs, as tl records the fit's threads
    embedding = np.ascontiguousarray(est.fit_transform(chunked), dtype=np.float32)
    slot = None
    if spec.save_affinity:
        digest = streamed_fingerprint(x, chunked.chunk_rows)
        slot = cache.make_slot(est.affinity_params(), "X", None, digest, adata.n_obs)
    changes = results_changes(
        adata,
        est,
        job_method(spec.method),
        embedding,
        key_added=spec.key_added,
        use_rep="X",
        n_pcs=None,
        neighbors_key=None,
        slot=slot,
        call_params={"n_jobs": threads},
    )
    return changes.items()


def _in_memory_changes(adata: Any, spec: JobSpec) -> list:
    """Run the job's estimator on an ``obsm`` representation through the ``tl`` code path.

    The parameters are the estimator's (``--param``, TorchDR's names); what is written is
    what ``tl.<method>`` writes (scanpy's names in ``uns``).
    """
    from ..adata import choose_graph, run_embedding
    from ..distributed import is_rank_zero

    before = _snapshot(adata)
    params, neighbors_key, by_default = dict(spec.params), spec.neighbors_key, False
    if neighbors_key is None and spec.method == "umap" and not spec.recompute_neighbors:
        # as tl.umap: the stored uns['neighbors'] graph when there is one, and its k
        choice = choose_graph(adata, None, default_key="neighbors", recompute=False)
        neighbors_key, by_default = choice.key, choice.by_default
        if choice.key is not None and choice.n_neighbors and "n_neighbors" not in params:
            params["n_neighbors"] = choice.n_neighbors
    est = build_estimator(spec.method, params, spec.device)
    est.set_params(verbose=spec.verbose or est.verbose)
    run_embedding(
        adata,
        est,
        job_method(spec.method),
        key_added=spec.key_added,
        use_rep=spec.use_rep,
        n_pcs=spec.n_pcs,
        neighbors_key=neighbors_key,
        copy=False,
        cache=spec.save_affinity,
        progress_bar=spec.progress and is_rank_zero(),
        graph_by_default=by_default,
    )
    return _changes_since(adata, before)


#: Rank 0's summary in the job's folder, printed by the launcher after the commit.
SUMMARY_FILE = "summary.txt"


def _all_ranks_done() -> None:
    """Wait until every process has its results (nothing is written before that)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_job(spec: JobSpec) -> int:
    """Run the job on this process; rank 0 writes the output and its summary.

    Every process computes its part, then all wait for each other (a barrier): rank 0
    writes only when no process has failed. With ``spec.staging`` (several processes) it
    writes there and leaves the summary in the job's folder; the launcher moves the output
    into place once every process has exited successfully.

    Returns
    -------
    int
        0 (errors raise).
    """
    from ..distributed import is_rank_zero

    t0 = time.perf_counter()
    label = METHODS[spec.method][2]
    procs = f"{spec.nproc} processes" if spec.nproc > 1 else "1 process"
    with open_skeleton(spec.input) as (adata, x):
        say(
            f"{label} of {adata.n_obs} cells (use_rep={spec.use_rep!r}) on {procs}, "
            f"device {spec.device}"
        )
        if spec.use_rep == "X":
            say("streaming X from disk by row chunks")
            changes = _streamed_changes(adata, x, spec)
        else:
            changes = _in_memory_changes(adata, spec)
        t_embed = time.perf_counter() - t0
        _all_ranks_done()
        if not is_rank_zero():
            return 0
        say(f"embedding done ({t_embed:.1f}s); writing {spec.output}")
        target = spec.staging or spec.output
        with reporting_write_errors(spec.output):
            write_output(spec.input, target, changes, overwrite=spec.overwrite)
        text = summary(spec, adata, changes, time.perf_counter() - t0)
    if spec.staging and spec.error_dir:
        Path(spec.error_dir, SUMMARY_FILE).write_text(text)
    else:
        print(text, flush=True)
    return 0


def summary(spec: JobSpec, adata: Any, changes: list, seconds: float) -> str:
    """The final report printed by rank 0."""
    key = spec.key_added or spec.method
    entry = next((v for s, k, v in changes if s == "uns" and k == key), {})
    timings = entry.get("timings", {}) if hasattr(entry, "get") else {}
    stages = ", ".join(f"{k} {float(v):.2f}s" for k, v in timings.items())
    written = ", ".join(f"{slot}[{key!r}]" for slot, key, _ in changes)
    rows = [
        "torchdr-sc embed: finished",
        f"  input      {spec.input} ({adata.n_obs} cells x {adata.n_vars} variables)",
        f"  method     {spec.method} on use_rep={spec.use_rep!r}, {entry.get('n_iter', '?')} "
        "iterations",
        f"  processes  {spec.nproc} on {spec.device}",
        f"  time       {stages}; total {seconds:.1f}s",
        f"  output     {spec.output}: {written}",
    ]
    return "\n".join(rows)


def check_spec(spec: JobSpec, info: InputInfo) -> None:
    """Validate the job against the input before any process starts.

    Raises
    ------
    InputError
        A missing or unusable representation, a method that cannot run on several
        processes, parameters that do not fit the data.
    """
    if spec.nproc > 1 and spec.method not in SHARDED:
        shown = ", ".join(SHARDED)
        msg = (
            f"--method {spec.method} does not shard its work across processes; use --nproc 1 "
            f"or one of {shown}."
        )
        raise InputError(msg)
    if spec.use_rep == "X" and not info.has_x:
        msg = f"INPUT {info.path!r} stores no X; pass --use-rep with an obsm key."
        raise InputError(msg)
    check_neighbors_key(spec.neighbors_key, info)
    if spec.neighbors_key is not None and spec.recompute_neighbors:
        msg = "pass one of --neighbors-key (a stored graph) and --recompute-neighbors."
        raise InputError(msg)
    check_key_added(spec)
    est = build_estimator(spec.method, spec.params, spec.device)
    try:
        est.check_n_samples(info.n_obs)
    except ValueError as err:
        raise InputError(str(err)) from err


def check_neighbors_key(key: str | None, info: InputInfo, flag: str = "--neighbors-key") -> None:
    """A ``--neighbors-key`` must name a ``uns`` entry of the input (scanpy's kNN graph).

    Raises
    ------
    InputError
    """
    if key is None or key in info.uns:
        return
    from .._validation import format_options

    shown = format_options(info.uns) or "nothing"
    msg = f"{flag} {key!r} is not in the uns of {info.path!r} (it holds {shown})."
    raise InputError(msg)


def check_key_added(spec: JobSpec) -> None:
    """``--key-added``: a key the output can store that overwrites nothing the job reads.

    Raises
    ------
    InputError
        An empty key, one holding ``'/'``, or the representation / kNN graph in use.
    """
    from ..adata import check_key

    key = spec.key_added
    try:
        check_key("key_added", key, optional=True)
    except ValueError as err:
        raise InputError(str(err)) from err
    read = {spec.use_rep, spec.neighbors_key, "tdr_affinities"} - {None, "X"}
    if key is not None and key in read:
        msg = (
            f"`key_added={key!r}` would overwrite what the job reads (use_rep="
            f"{spec.use_rep!r}, neighbors_key={spec.neighbors_key!r}); choose another key."
        )
        raise InputError(msg)


def resolve_use_rep(use_rep: str | None, n_pcs: int | None, info: InputInfo) -> str:
    """scanpy's rule: ``use_rep`` if given, else X (at most 50 variables) or ``X_pca``."""
    from .._validation import format_options

    if use_rep is None:
        if info.n_vars <= 50 or n_pcs == 0:
            return "X"
        if "X_pca" in info.obsm:
            return "X_pca"
        msg = (
            f"X has {info.n_vars} variables (more than 50) and obsm holds no 'X_pca': pass "
            "--use-rep (an obsm key, or X to embed all variables)."
        )
        raise InputError(msg)
    if use_rep == "X" or use_rep in info.obsm:
        if n_pcs and use_rep != "X" and n_pcs > info.obsm[use_rep][-1]:
            cols = info.obsm[use_rep][-1]
            msg = f"--n-pcs {n_pcs} is larger than the {cols} columns of {use_rep!r}."
            raise InputError(msg)
        return use_rep
    shown = format_options(info.obsm) or "nothing"
    msg = f"`use_rep={use_rep!r}` is not in adata.obsm (available: {shown})."
    raise InputError(msg)


def fail(message: str, code: int) -> int:
    """Print ``torchdr-sc embed: error: ...`` on stderr and return ``code``."""
    print(f"torchdr-sc embed: error: {message}", file=sys.stderr, flush=True)
    return code
