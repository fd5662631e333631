"""Sphinx configuration of the torchdr-sc documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (the ``docs`` extra).

Offline by default: intersphinx reads small inventories of the external names the docs link
to, written at each build from the table in ``docs/_ext/inventories.py``, so the build needs
no network, as in CI. On Read
the Docs (``READTHEDOCS=True``) or with ``TORCHDR_SC_DOCS_ONLINE=1`` the projects' full
inventories are downloaded first, with the local files as a fallback.

The tutorials (``tutorials/*.md``, MyST Markdown notebooks) are copied into
``docs/tutorials/`` and executed by myst-nb; a cell that raises fails the build.
``TORCHDR_SC_DOCS_EXECUTE=off`` renders them without running them (a quick look at the
prose; not what CI does).
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path

import nbformat
from myst_nb.core.read import read_myst_markdown_notebook

import torchdr_sc

try:  # sphinx-autodoc-typehints 3.6 calls an API Sphinx 9 deprecates, once per docstring
    from sphinx.deprecation import RemovedInSphinx10Warning

    warnings.filterwarnings(
        "ignore", category=RemovedInSphinx10Warning, module="sphinx_autodoc_typehints"
    )
except ImportError:  # pragma: no cover - a Sphinx without that warning class
    pass

# One thread per process for the executed tutorials (the kernels inherit this): on a small,
# shared CI machine, torch's two OpenMP threads waiting on each other made a 700-cell t-SNE
# take 73 s instead of 1.8 s. Set OMP_NUM_THREADS yourself to build with more.
os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))

# -- Project -----------------------------------------------------------------------------
project = "torchdr-sc"
author = "torchdr-sc developers"
copyright = "2026, torchdr-sc developers"
release = torchdr_sc.__version__
version = release

# -- Extensions --------------------------------------------------------------------------
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinxarg.ext",
    "tdr_docs",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "**.ipynb_checkpoints",
    "tutorials/notebooks",
]
nitpicky = True

# -- Tutorials: tutorials/*.md -> docs/tutorials/ (copied when changed) ------------------
_TUTORIALS_SRC = ROOT / "tutorials"
_TUTORIALS_DST = HERE / "tutorials"
_TUTORIALS_DST.mkdir(exist_ok=True)
for _src in sorted(_TUTORIALS_SRC.glob("*.md")):
    _dst = _TUTORIALS_DST / _src.name
    if not _dst.exists() or _dst.read_bytes() != _src.read_bytes():
        shutil.copyfile(_src, _dst)
for _stale in _TUTORIALS_DST.glob("*.md"):
    if not (_TUTORIALS_SRC / _stale.name).exists():
        _stale.unlink()

# Each tutorial also as a Jupyter notebook (unexecuted), offered for download on the tutorials'
# index page: myst-nb reads the MyST text notebook, nbformat writes the .ipynb. The folder is
# not a source of pages.
_NOTEBOOKS = _TUTORIALS_DST / "notebooks"
_NOTEBOOKS.mkdir(exist_ok=True)
for _src in sorted(_TUTORIALS_SRC.glob("[0-9]*.md")):
    _notebook = _NOTEBOOKS / f"{_src.stem}.ipynb"
    _text = nbformat.writes(read_myst_markdown_notebook(_src.read_text(), path=_src))
    if not _notebook.exists() or _notebook.read_text() != _text:
        _notebook.write_text(_text)

# -- MyST / myst-nb ----------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "substitution"]
myst_substitutions = {"version": release}
myst_heading_anchors = 3
nb_execution_mode = os.environ.get("TORCHDR_SC_DOCS_EXECUTE", "cache")
nb_execution_cache_path = str(HERE / "_build" / ".jupyter_cache")
nb_execution_raise_on_error = True  # a broken cell fails the build (and CI)
nb_execution_show_tb = True  # ... with its traceback in the log
nb_execution_timeout = 600  # seconds per cell
nb_execution_in_temp = True  # files written by the tutorials land in a temporary folder
nb_merge_streams = True
# stderr carries the progress bars (a text fallback without ipywidgets: hundreds of lines)
# and the stage lines; the pages keep stdout (scanpy's log) and the figures.
nb_output_stderr = "remove"

# -- autodoc / autosummary / napoleon / typehints ----------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # sphinx-autodoc-typehints writes the types into the descriptions
autodoc_default_options = {
    # scikit-learn's own machinery, documented by scikit-learn
    "exclude-members": (
        "get_params, set_params, set_output, get_metadata_routing, set_fit_request, "
        "set_transform_request, set_partial_fit_request, get_feature_names_out"
    ),
}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
napoleon_use_ivar = False  # an entry may name several attributes ("rows, cols")
napoleon_custom_sections = [("Writes", "notes_style"), ("Reads", "notes_style")]
typehints_defaults = "comma"
typehints_use_signature = False
always_use_bars_union = True
typehints_document_rtype = True

# -- intersphinx: offline inventories, the projects' own when online ---------------------
from inventories import PROJECTS, write_inventories  # noqa: E402 - docs/_ext is on the path

_ONLINE = os.environ.get("READTHEDOCS") == "True" or os.environ.get(
    "TORCHDR_SC_DOCS_ONLINE", ""
) not in ("", "0")
_LOCAL = write_inventories(HERE / "_build" / "_inventories")
intersphinx_mapping = {
    name: (url, (None, str(_LOCAL[name])) if _ONLINE else str(_LOCAL[name]))
    for name, url in PROJECTS.items()
}
intersphinx_timeout = 10

# -- HTML --------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"torchdr-sc {release}"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "home_page_in_toc": True,
}
html_last_updated_fmt = None
html_static_path = ["_static"]
html_css_files = ["tables.css"]

# -- Known gaps, each narrow (see the report of the docs issue) ---------------------------
nitpick_ignore = [
    # Embedder.transform's and Embedder's docstrings (estimators/_base.py) point at the
    # modules estimators.transform / estimators.persistence, which have no reference page
    # yet (both are being reworked); the text reads fine as a module name.
    ("py:mod", "torchdr_sc.estimators.transform"),
    ("py:mod", "torchdr_sc.estimators.persistence"),
]
