"""The atlas job: ``torchdr-sc embed INPUT --method umap --out OUTPUT [--nproc N]``.

Embeds the cells of an ``.h5ad`` / ``.zarr`` file on one process or on ``N`` torchrun
workers, and writes the input plus the results to a new file (the input is only read).
Wire it into a command line with::

    from torchdr_sc.atlas import add_embed_parser
    add_embed_parser(subparsers)   # sets func=run_embed

or run it as ``python -m torchdr_sc.atlas embed ...``.
"""

from ._cli import add_embed_parser, run_embed

__all__ = ["add_embed_parser", "run_embed"]
