"""``torchdr-sc ingest``: new cells onto a reference's embeddings, from the command line.

``torchdr-sc ingest QUERY.h5ad --reference REF.h5ad --obs cell_type --out OUT.h5ad`` runs
:func:`torchdr_sc.tl.ingest` and writes the query with its new ``obsm`` / ``obs`` entries.
The parser imports nothing heavy; the work imports anndata and the package after parsing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Exit code of argument and input errors (argparse's convention).
USAGE_ERROR = 2


def _say(message: str) -> None:
    print(f"torchdr-sc ingest: {message}", file=sys.stderr, flush=True)


def _check(args: argparse.Namespace) -> tuple[Path, int]:
    """Everything checked before any work: the output path, the two inputs (readable AnnData
    ``.h5ad`` files), the reference's kNN graph key, the free space. Returns the output path
    and the query's number of cells.

    Raises
    ------
    InputError
        Bad options or inputs (exit status 2).
    OutputError
        Too little free space for the output (exit status 1).
    """
    from ..atlas import (
        InputError,
        check_free_space,
        check_neighbors_key,
        estimated_output_bytes,
        inspect_input,
    )

    out = Path(args.out)
    for path, flag in ((args.query, "QUERY"), (args.reference, "--reference")):
        if not Path(path).is_file():
            msg = f"{flag} {path!r} is not a file."
            raise InputError(msg)
    if out.suffix != ".h5ad":
        msg = f"--out must end in .h5ad; got {str(out)!r}."
        raise InputError(msg)
    if out.exists() and not args.overwrite:
        msg = f"{str(out)!r} exists: pass --overwrite to replace it."
        raise InputError(msg)
    if not out.resolve().parent.is_dir():
        msg = f"the folder of --out {str(out.parent)!r} does not exist."
        raise InputError(msg)
    query = inspect_input(args.query, "QUERY")
    reference = inspect_input(args.reference, "--reference")
    check_neighbors_key(args.neighbors_key, reference)
    new = query.n_obs * (4 * 2 * (len(args.embedding_method) + 25) + 64 * len(args.obs))
    check_free_space(out, estimated_output_bytes(args.query, new), "--out")
    return out, query.n_obs


def _run(args: argparse.Namespace) -> int:
    from ..atlas import InputError, OutputError, reporting_write_errors

    try:
        out, _ = _check(args)
    except InputError as err:
        _say(str(err))
        return USAGE_ERROR
    except OutputError as err:
        _say(str(err))
        return 1
    import anndata as ad

    from .. import tl

    query, reference = ad.read_h5ad(args.query), ad.read_h5ad(args.reference)
    try:
        tl.ingest(
            query,
            reference,
            obs=args.obs or None,
            embedding_method=tuple(args.embedding_method),
            neighbors_key=args.neighbors_key,
            use_rep=args.use_rep,
            random_state=args.seed,
            device=args.device,
        )
    except ValueError as err:
        _say(str(err))
        return USAGE_ERROR
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with reporting_write_errors(out, "--out"):
            query.write_h5ad(tmp)
            tmp.replace(out)  # the output appears whole or not at all
    except OutputError as err:
        _say(str(err))
        return 1
    finally:
        tmp.unlink(missing_ok=True)
    added = ", ".join([f"obsm[{m!r}]" for m in query.obsm] + [f"obs[{c!r}]" for c in args.obs])
    print(f"torchdr-sc ingest: wrote {out} ({query.n_obs} cells; {added})")
    return 0


def add_ingest_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``torchdr-sc ingest``."""
    parser = subparsers.add_parser(
        "ingest",
        help="place new cells on a reference's embeddings and transfer its labels",
        description=(
            "Run tdr.tl.ingest: the cells of QUERY are placed on the embeddings of the "
            "reference (obsm['X_umap'], ['X_tsne'], ...) by each method's transform, the "
            "reference held fixed, and the --obs columns are transferred by a kNN vote."
        ),
    )
    parser.add_argument("query", metavar="QUERY", help="the new cells (.h5ad)")
    parser.add_argument("--reference", required=True, help="the embedded reference (.h5ad)")
    parser.add_argument("--out", required=True, help="output .h5ad (the query, annotated)")
    parser.add_argument(
        "--obs", nargs="*", default=[], metavar="COLUMN", help="reference obs columns to transfer"
    )
    parser.add_argument(
        "--embedding-method",
        nargs="+",
        default=["umap", "pca"],
        metavar="METHOD",
        help="embeddings to place the cells on (default: umap pca)",
    )
    parser.add_argument("--use-rep", default=None, help="representation (default: recorded)")
    parser.add_argument("--neighbors-key", default=None, help="the reference's kNN graph key")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=_run)
