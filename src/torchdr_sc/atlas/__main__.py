"""``python -m torchdr_sc.atlas embed INPUT ...``: the ``embed`` command on its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._cli import add_embed_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; the exit status."""
    parser = argparse.ArgumentParser(prog="torchdr-sc")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_embed_parser(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
