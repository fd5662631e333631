"""Offline intersphinx inventories of the external names these docs link to.

CI and developer machines build the docs without network access, so the projects' own
``objects.inv`` cannot be downloaded. This module holds, per project, the objects the
docstrings, type hints and pages refer to, with their addresses in that project's docs, and
:func:`write_inventories` writes them as Sphinx (version 2) inventories. ``docs/conf.py``
points intersphinx at these files, so every such reference is a real link and the build stays
nitpicky (``-n -W``). On Read the Docs the projects' full inventories are fetched first.

A reference to an external object missing here fails the build with ``reference target not
found``: add the object to :data:`OBJECTS` (and check its address).
"""

from __future__ import annotations

import zlib
from pathlib import Path

#: project -> base URL of its documentation (the same as in ``intersphinx_mapping``).
PROJECTS = {
    "python": "https://docs.python.org/3/",
    "numpy": "https://numpy.org/doc/stable/",
    "scipy": "https://docs.scipy.org/doc/scipy/",
    "torch": "https://docs.pytorch.org/docs/stable/",
    "sklearn": "https://scikit-learn.org/stable/",
    "anndata": "https://anndata.readthedocs.io/en/stable/",
    "scanpy": "https://scanpy.readthedocs.io/en/stable/",
    "pandas": "https://pandas.pydata.org/docs/",
}

_ABC = "library/collections.abc.html#$"
_TYPING = "library/typing.html#$"
_NP = "reference/generated/$.html#$"
_SK = "modules/generated/$.html#$"
_SP = "reference/generated/$.html#$"
_SC = "generated/$.html#$"

#: project -> [(name, domain:role, relative URI)]; ``$`` in a URI stands for the name (it is
#: written out in the inventory).
OBJECTS: dict[str, list[tuple[str, str, str]]] = {
    "python": [
        ("typing.Any", "py:data", _TYPING),
        ("typing.Literal", "py:data", _TYPING),
        ("typing.Optional", "py:data", _TYPING),
        ("typing.Union", "py:data", _TYPING),
        ("Ellipsis", "py:data", "library/constants.html#$"),
        ("collections.abc.Callable", "py:class", _ABC),
        ("collections.abc.Iterable", "py:class", _ABC),
        ("collections.abc.Iterator", "py:class", _ABC),
        ("collections.abc.Mapping", "py:class", _ABC),
        ("collections.abc.Sequence", "py:class", _ABC),
        ("contextlib.AbstractContextManager", "py:class", "library/contextlib.html#$"),
        ("pathlib.Path", "py:class", "library/pathlib.html#$"),
        ("os.PathLike", "py:class", "library/os.html#$"),
        ("logging.Logger", "py:class", "library/logging.html#$"),
        ("argparse.ArgumentParser", "py:class", "library/argparse.html#$"),
        ("argparse.Namespace", "py:class", "library/argparse.html#$"),
        ("pickle", "py:module", "library/pickle.html#module-pickle"),
    ],
    "numpy": [
        ("numpy.ndarray", "py:class", _NP),
        ("numpy.dtype", "py:class", _NP),
        ("numpy.random.Generator", "py:class", "reference/random/generator.html#$"),
        ("numpy.random.RandomState", "py:class", "reference/random/legacy.html#$"),
    ],
    "scipy": [
        ("scipy.sparse.csr_matrix", "py:class", _SP),
        ("scipy.sparse.csr_array", "py:class", _SP),
        ("scipy.sparse.spmatrix", "py:class", _SP),
        ("scipy.sparse.sparray", "py:class", _SP),
    ],
    "torch": [
        ("torch.Tensor", "py:class", "tensors.html#$"),
        ("torch.device", "py:class", "tensor_attributes.html#$"),
        ("torch.dtype", "py:class", "tensor_attributes.html#$"),
        ("torch.Generator", "py:class", "generated/$.html#$"),
        ("torch.compile", "py:function", "generated/$.html#$"),
        ("torch.lobpcg", "py:function", "generated/$.html#$"),
        ("torch.nn.Module", "py:class", "generated/$.html#$"),
        ("torch.optim.Optimizer", "py:class", "optim.html#$"),
        ("torch.utils.data.DataLoader", "py:class", "data.html#$"),
        ("torch.distributed", "py:module", "distributed.html#module-torch.distributed"),
    ],
    "sklearn": [
        ("sklearn.base.BaseEstimator", "py:class", _SK),
        ("sklearn.base.TransformerMixin", "py:class", _SK),
        ("sklearn.base.clone", "py:function", _SK),
        ("sklearn.exceptions.NotFittedError", "py:exception", _SK),
        ("sklearn.neighbors.KNeighborsTransformer", "py:class", _SK),
        ("sklearn.pipeline.Pipeline", "py:class", _SK),
        ("sklearn.pipeline.make_pipeline", "py:function", _SK),
        ("sklearn.manifold.TSNE", "py:class", _SK),
    ],
    "anndata": [
        ("anndata.AnnData", "py:class", "generated/$.html#$"),
    ],
    "scanpy": [
        ("scanpy.pp.neighbors", "py:function", _SC),
        ("scanpy.tl.umap", "py:function", _SC),
        ("scanpy.tl.tsne", "py:function", _SC),
        ("scanpy.tl.ingest", "py:function", _SC),
        ("scanpy.tl.leiden", "py:function", _SC),
        ("scanpy.pl.umap", "py:function", _SC),
        ("scanpy.pl.tsne", "py:function", _SC),
        ("scanpy.pl.embedding", "py:function", _SC),
        ("scanpy.datasets.pbmc68k_reduced", "py:function", _SC),
    ],
    "pandas": [
        ("pandas.DataFrame", "py:class", "reference/api/$.html#$"),
    ],
}


def inventory_bytes(project: str) -> bytes:
    """The Sphinx inventory (version 2) of one project's listed objects."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    body = "".join(
        f"{name} {role} 1 {uri.replace('$', name)} -\n"
        for name, role, uri in sorted(OBJECTS[project])
    ).encode()
    return header + zlib.compress(body, 9)


def write_inventories(folder: Path) -> dict[str, Path]:
    """Write ``<project>.inv`` for every project into ``folder`` (when changed)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for project in PROJECTS:
        path = folder / f"{project}.inv"
        data = inventory_bytes(project)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        paths[project] = path
    return paths
