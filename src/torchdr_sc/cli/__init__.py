"""The ``torchdr-sc`` command line: one tree for every subcommand.

- :mod:`~torchdr_sc.cli.main`: the console script (``torchdr-sc``, ``python -m torchdr_sc.cli``).
- :mod:`~torchdr_sc.cli.demo`: ``torchdr-sc demo``, UMAP and t-SNE of scanpy's bundled data.
- :mod:`~torchdr_sc.cli.embed`: ``torchdr-sc embed``, the atlas job on one or N processes.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
