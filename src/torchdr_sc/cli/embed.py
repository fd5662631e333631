"""``torchdr-sc embed``: the argument parser and the launcher.

The launcher checks everything it can before any work (input readable, method known,
representation present, parameters valid, ``--key-added`` storable, output free), then runs
the job in this process (``--nproc 1``) or starts ``--nproc`` workers with torchrun
(:func:`torchdr_sc.atlas.launch`; gloo on CPU, NCCL on CUDA). Exit status: 0 on success, 2
for bad input or options (nothing is started), 1 when the job fails (the message names the
rank that failed first), 130 / 143 when interrupted by SIGINT / SIGTERM (the workers are
stopped and nothing is written).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only the plain-data method table at import: the parser is built without torch or scanpy;
# the job's code is imported by the functions that run after parsing.
from ..atlas import METHODS

if TYPE_CHECKING:
    from ..atlas import JobSpec

#: Method options with their own flag: flag dest -> (estimator parameter, methods it fits).
METHOD_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "n_neighbors": ("n_neighbors", ("umap",)),
    "min_dist": ("min_dist", ("umap",)),
    "spread": ("spread", ("umap",)),
    "perplexity": ("perplexity", ("infotsne", "largevis", "tsne", "tsnekhorn")),
    "n_negatives": ("n_negatives", ("infotsne", "largevis", "umap")),
    "n_components": ("n_components", tuple(METHODS)),
    "max_iter": ("max_iter", tuple(METHODS)),
    "lr": ("lr", tuple(METHODS)),
    "init": ("init", tuple(METHODS)),
    "backend": ("backend", tuple(METHODS)),
    "seed": ("random_state", tuple(METHODS)),
}


def add_embed_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``embed`` subcommand on ``subparsers`` (sets ``func=run_embed``)."""
    parser = subparsers.add_parser(
        "embed",
        help="embed the cells of an .h5ad / .zarr file, on one or several processes",
        description=(
            "Embed the cells of INPUT (.h5ad or .zarr) with a torchdr-sc method and write "
            "INPUT plus the embedding (obsm, uns, optionally the obsp affinity) to --out. "
            "INPUT is only read. With --nproc N > 1, N workers are started with torchrun "
            "(gloo on CPU, NCCL on CUDA) and share the work."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="input .h5ad file or .zarr store")
    parser.add_argument("--out", required=True, metavar="OUTPUT", help="output .h5ad or .zarr")
    parser.add_argument(
        "--method", default="umap", help=f"one of {', '.join(METHODS)} (default: %(default)s)"
    )
    parser.add_argument(
        "--use-rep",
        default=None,
        help="obsm key or X to embed (default: scanpy's rule: X up to 50 variables, else X_pca)",
    )
    parser.add_argument("--n-pcs", type=int, default=None, help="leading columns of --use-rep")
    parser.add_argument(
        "--neighbors-key",
        default=None,
        help="reuse a scanpy kNN graph stored under this key (umap: uns['neighbors'] is used "
        "when present, as tl.umap does)",
    )
    parser.add_argument(
        "--recompute-neighbors",
        action="store_true",
        help="search the neighbours afresh even when the input stores a kNN graph",
    )
    parser.add_argument("--key-added", default=None, help="obsm / uns key of the result")
    parser.add_argument(
        "--nproc", type=int, default=1, help="processes (torchrun workers) (default: 1)"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu or cuda (default: auto)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    parser.add_argument(
        "--save-affinity", action="store_true", help="also store the input affinity P in obsp"
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.add_argument("--verbose", action="store_true", help="log every stage of the engine")
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds a process waits for the others before the job fails (default: 1800)",
    )
    group = parser.add_argument_group("method parameters")
    group.add_argument("--n-neighbors", type=int, help="neighbourhood size (umap)")
    group.add_argument("--min-dist", type=float, help="umap's min_dist")
    group.add_argument("--spread", type=float, help="umap's spread")
    group.add_argument("--perplexity", type=float, help="perplexity (t-SNE family)")
    group.add_argument("--n-negatives", type=int, help="negative samples per edge")
    group.add_argument("--n-components", type=int, help="dimension of the embedding")
    group.add_argument("--max-iter", type=int, help="iterations (epochs)")
    group.add_argument("--lr", type=float, help="learning rate")
    group.add_argument("--init", help="pca, spectral or normal")
    group.add_argument("--backend", help="kNN backend: auto, torch, faiss or keops")
    group.add_argument("--seed", type=int, help="random_state (default: 0)")
    group.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other estimator parameter, e.g. --param early_exaggeration_coeff=8",
    )
    parser.set_defaults(func=run_embed)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def method_params(args: argparse.Namespace) -> dict[str, Any]:
    """Estimator parameters from the method flags and ``--param``; checks they apply."""
    from ..atlas import InputError

    params: dict[str, Any] = {}
    for dest, (name, methods) in METHOD_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if args.method not in methods:
            flag = "--" + dest.replace("_", "-")
            msg = f"{flag} does not apply to --method {args.method}."
            raise InputError(msg)
        params[name] = value
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            msg = f"--param must look like NAME=VALUE; got {item!r}."
            raise InputError(msg)
        params[name.strip()] = _literal(value.strip())
    return params


def _device(device: str, nproc: int) -> str:
    import torch

    from ..atlas import InputError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        msg = f"--device must be auto, cpu or cuda; got {device!r}."
        raise InputError(msg)
    if device == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            msg = "--device cuda but no CUDA device is available; use --device cpu."
            raise InputError(msg)
        if nproc > count:
            msg = f"--nproc {nproc} needs {nproc} CUDA devices; {count} available."
            raise InputError(msg)
    return device


def build_spec(args: argparse.Namespace) -> JobSpec:
    """Check the command line and the input; the job to run.

    Raises
    ------
    InputError
        Anything wrong with the options, the input or the output path.
    """
    from ..atlas import (
        InputError,
        JobSpec,
        check_free_space,
        check_spec,
        estimated_output_bytes,
        file_format,
        inspect_input,
        resolve_use_rep,
    )

    if args.method not in METHODS:
        msg = f"unknown --method {args.method!r}; choose one of {', '.join(sorted(METHODS))}."
        raise InputError(msg)
    if args.nproc < 1:
        msg = f"--nproc must be at least 1; got {args.nproc}."
        raise InputError(msg)
    if args.timeout <= 0:
        msg = f"--timeout must be positive; got {args.timeout}."
        raise InputError(msg)
    params = method_params(args)
    source, target = Path(args.input), Path(args.out)
    file_format(target, "OUTPUT")
    info = inspect_input(source)
    if target.resolve() == source.resolve():
        msg = "OUTPUT must differ from INPUT (the input is never modified)."
        raise InputError(msg)
    if target.exists() and not args.overwrite:
        msg = f"OUTPUT {str(target)!r} exists; pass --overwrite to replace it."
        raise InputError(msg)
    if not target.parent.exists():
        msg = f"the folder of OUTPUT {str(target.parent)!r} does not exist."
        raise InputError(msg)
    use_rep = resolve_use_rep(args.use_rep, args.n_pcs, info)
    spec = JobSpec(
        input=str(source),
        output=str(target),
        method=args.method,
        use_rep=use_rep,
        n_pcs=args.n_pcs,
        neighbors_key=args.neighbors_key,
        key_added=args.key_added,
        params=params,
        device=_device(args.device, args.nproc),
        overwrite=args.overwrite,
        save_affinity=args.save_affinity,
        progress=args.progress,
        verbose=args.verbose,
        nproc=args.nproc,
        timeout=args.timeout,
        recompute_neighbors=args.recompute_neighbors,
    )
    check_spec(spec, info)
    check_free_space(target, estimated_output_bytes(source, _new_bytes(spec, info.n_obs)))
    return spec


def _new_bytes(spec: JobSpec, n_obs: int) -> int:
    """What the job adds to the input: the float32 embedding and, with --save-affinity, the
    affinity in CSR (12 bytes an edge, up to 90 edges a cell, both directions)."""
    dims = int(spec.params.get("n_components", 2))
    affinity = 12 * 2 * 90 * n_obs if spec.save_affinity else 0
    return 4 * dims * n_obs + affinity


def run_embed(args: argparse.Namespace) -> int:
    """Run ``torchdr-sc embed`` with parsed ``args``; returns the exit status.

    0 on success, 2 for bad input or options (nothing started), 1 when the job fails (the
    output cannot be written included: too little free space is found before any work),
    ``128 + signal`` (130 for SIGINT, 143 for SIGTERM) when it is interrupted: one line
    says so, and no output nor partial file is left.
    """
    from ..atlas import InputError, OutputError, fail, launch

    try:
        spec = build_spec(args)
    except InputError as err:
        return fail(str(err), 2)
    except OutputError as err:
        return fail(str(err), 1)
    if spec.nproc > 1:
        return launch(spec)
    return _run_here(spec)


def _run_here(spec: JobSpec) -> int:
    """Run the job in this process (``--nproc 1``); SIGTERM and SIGINT end it cleanly."""
    from ..atlas import InputError, Interrupted, OutputError, fail, raise_on_signals, run_job

    try:
        with raise_on_signals():
            return run_job(spec)
    except Interrupted as stop:
        return fail(f"interrupted by {stop.name}; nothing was written.", stop.exit_code)
    except InputError as err:
        return fail(str(err), 2)
    except OutputError as err:
        return fail(str(err), 1)
    except Exception as err:
        return fail(f"{type(err).__name__}: {err}", 1)
