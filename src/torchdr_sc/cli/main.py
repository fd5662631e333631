"""The ``torchdr-sc`` console script.

Subcommands are registered by functions ``add_<name>(subparsers)`` listed in
:data:`SUBCOMMANDS`; each adds its parser and sets ``func`` (called with the parsed
arguments, returning the exit code). To add a subcommand (e.g. ``embed``), write its
``add_embed`` (in its own module if it is large) and append it to :data:`SUBCOMMANDS`.

Building the parsers imports neither torch nor scanpy (``--help`` and argument errors
answer at once): what a command needs is imported by its ``func``, after parsing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .._version import package_version
from .embed import add_embed_parser
from .ingest import add_ingest_parser


def _run_demo(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # a console command never opens windows
    from .demo import run_demo, summary

    adata, results = run_demo(
        args.out,
        methods=tuple(args.methods),
        device=args.device,
        compare_scanpy=args.compare_scanpy,
        progress=args.progress,
        max_iter=args.max_iter,
    )
    print(summary(adata, results, args.out))
    return 0


def add_demo(subparsers: argparse._SubParsersAction) -> None:
    """Register ``torchdr-sc demo``."""
    from .demo import METHODS

    parser = subparsers.add_parser(
        "demo",
        help="UMAP and t-SNE of scanpy's pbmc68k_reduced, with a figure and a summary",
        description=(
            "Embed scanpy's bundled pbmc68k_reduced (700 cells) with tdr.tl, save a PNG of "
            "the embeddings coloured by bulk_labels and the annotated data, and print the "
            "time and 10-NN bulk_labels accuracy of every method."
        ),
    )
    parser.add_argument(
        "--out", default="torchdr_sc_demo", help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["umap", "tsne"],
        choices=METHODS,
        metavar="METHOD",
        help=f"tl functions to run, among {', '.join(METHODS)} (default: umap tsne)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA when available), 'cpu' or 'cuda' (default: auto)",
    )
    parser.add_argument(
        "--compare-scanpy",
        action="store_true",
        help="also run sc.pp.neighbors + sc.tl.umap and sc.tl.tsne",
    )
    parser.add_argument(
        "--progress", action="store_true", help="show a progress bar over each optimisation"
    )
    parser.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="iterations of every method (default: each method's own); small = quick look",
    )
    parser.set_defaults(func=_run_demo)


#: Registration functions of the subcommands, in the order of ``--help``.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_demo,
    add_embed_parser,
    add_ingest_parser,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="torchdr-sc",
        description="Fast neighbor embeddings in PyTorch for AnnData / scanpy.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``torchdr-sc``; returns the exit code.

    Parameters
    ----------
    argv
        Arguments without the program name (``None``: ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
