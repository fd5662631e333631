"""Small Sphinx helpers for the torchdr-sc docs (loaded by ``docs/conf.py``).

- Public names are documented where users reach them (``torchdr_sc.UMAP``,
  ``torchdr_sc.knn.BACKENDS``), while docstrings also write the defining module
  (``torchdr_sc.affinity.EntropicAffinity``) or a bare name inside a module's docstring.
  :func:`resolve_alias` resolves such a reference to the object's documented name, and maps
  the private paths that type hints resolve to (``anndata._core.anndata.AnnData``) to the
  names the projects document (``anndata.AnnData``), before intersphinx looks them up.
- :func:`data_docstring` gives a re-exported constant the ``#:`` comment of the module that
  defines it (autodoc reads comments only in the module named, and would otherwise show the
  docstring of ``dict`` or ``tuple``).
- :func:`prose_returns` lets a numpydoc ``Returns`` / ``Yields`` section hold prose without a
  type line (scanpy's style: the type comes from the annotation), which napoleon would read
  as a type.
- :func:`trailing_prose` moves a closing paragraph of a Parameters / Attributes section under
  a Notes header (numpydoc would read it as one more entry).
- :func:`_wrap_napoleon` keeps napoleon from reading ``Some prose: more`` in an attribute's
  ``#:`` comment as ``type: description``.
- :func:`skip_field_defaults` skips a function stored as a class attribute (a dataclass
  field's default), which autodoc would list as a method.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer

#: Modules whose ``__all__`` re-exports names defined deeper in the package.
SEAMS = (
    "torchdr_sc",
    "torchdr_sc.affinity",
    "torchdr_sc.estimators",
    "torchdr_sc.knn",
    "torchdr_sc.tl",
    "torchdr_sc.pp",
)

#: Private paths of external objects (as type hints resolve them) -> their documented names.
EXTERNAL = {
    "anndata._core.anndata.AnnData": "anndata.AnnData",
    "scipy.sparse._csr.csr_matrix": "scipy.sparse.csr_matrix",
    "scipy.sparse._csr.csr_array": "scipy.sparse.csr_array",
    "scipy.sparse._matrix.spmatrix": "scipy.sparse.spmatrix",
    "pandas.core.frame.DataFrame": "pandas.DataFrame",
    "torch._C.Generator": "torch.Generator",
    "torch.nn.modules.module.Module": "torch.nn.Module",
    "torch.utils.data.dataloader.DataLoader": "torch.utils.data.DataLoader",
}

_PY_ROLES = ("class", "func", "meth", "data", "attr", "obj", "exc", "mod")


def _aliases() -> dict[str, str]:
    """``seam.Name`` and ``defining_module.Name`` -> each other, for every re-export."""
    aliases: dict[str, str] = {}
    for seam in SEAMS:
        module = importlib.import_module(seam)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name, None)
            defining = getattr(obj, "__module__", None)
            if isinstance(defining, str) and defining.startswith("torchdr_sc"):
                aliases.setdefault(f"{defining}.{name}", f"{seam}.{name}")
            # the deeper seam (torchdr_sc.affinity.X) also names what the facade documents
            for other in SEAMS:
                if other != seam and name in getattr(importlib.import_module(other), "__all__", ()):
                    aliases.setdefault(f"{other}.{name}", f"{seam}.{name}")
    return aliases


def resolve_alias(
    app: Sphinx, env: Any, node: nodes.Element, contnode: nodes.Element
) -> nodes.Element | None:
    """``missing-reference``: retry a py reference under the name its object is documented by."""
    if node.get("refdomain") != "py":
        return None
    target: str = node["reftarget"]
    if target in EXTERNAL:  # intersphinx (which runs after this handler) finds the public name
        node["reftarget"] = target = EXTERNAL[target]
        return None
    domain = env.domains["py"]
    documented = domain.objects
    aliases = app.env.tdr_aliases
    candidates = [target]
    module = node.get("py:module")
    if "." not in target:  # a bare name: the current module first, then each public seam
        candidates = [f"{m}.{target}" for m in ([module] if module else []) + list(SEAMS)]
    for candidate in candidates:
        for name in (candidate, aliases.get(candidate)):
            if name and name in documented and name != target:
                new = node.deepcopy()
                new["reftarget"] = name
                new["refspecific"] = False
                return domain.resolve_xref(
                    env, node["refdoc"], app.builder, node["reftype"], name, new, contnode
                )
        # a facade-documented name written as a seam name, or the reverse
        for alias, documented_name in aliases.items():
            if documented_name == candidate and alias in documented:
                return domain.resolve_xref(
                    env, node["refdoc"], app.builder, node["reftype"], alias, node, contnode
                )
    return None


def data_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Give a re-exported constant the ``#:`` comment of its defining module."""
    if what not in ("data", "attribute") or not name.startswith("torchdr_sc."):
        return
    if _normalised(lines) and _normalised(lines) != _normalised(_type_doc(obj)):
        return  # the object has its own documentation
    seam, _, short = name.rpartition(".")
    package = importlib.import_module(seam)
    for modname in _submodules(package):
        try:
            module = importlib.import_module(modname)
        except ImportError:  # a backend module whose optional package is missing
            continue
        if getattr(module, short, object()) is not obj:
            continue
        comment = ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", short))
        if comment:
            lines[:] = list(comment)
            return


def _type_doc(obj: Any) -> list[str]:
    doc = type(obj).__doc__ or ""
    return doc.splitlines()


def _normalised(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip()]


def _submodules(package: Any) -> list[str]:
    import pkgutil

    names = [package.__name__]
    if hasattr(package, "__path__"):
        names += [m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
    return names


_HEADER = re.compile(r"^(\s*)(Returns|Yields)\s*$")
_FIELD_HEADER = re.compile(r"^(\s*)(Parameters|Other Parameters|Attributes)\s*$")
_TYPE_LIKE = re.compile(r"[\w.\[\], |]+")
_NAME_TYPE = re.compile(r"^[A-Za-z_]\w*\s+:\s+\S")


def _is_prose(entry: str) -> bool:
    if _NAME_TYPE.match(entry):
        return False
    if _TYPE_LIKE.fullmatch(entry) and not re.search(r"[\w\]]\s+[A-Za-z_]", entry):
        return False
    return True


def prose_returns(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Turn a prose entry of a Returns / Yields section into a typeless one (``:``)."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _HEADER.match(lines[i])
        if not (match and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}):
            out.append(lines[i])
            i += 1
            continue
        indent = match.group(1)
        out += [lines[i], lines[i + 1]]
        i += 2
        in_prose = False  # consecutive prose lines are one entry
        while i < len(lines):
            line = lines[i]
            if line.strip() and not line.startswith(indent + " ") and line.startswith(indent):
                if i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
                    break  # the next section
                if in_prose or _is_prose(line.strip()):
                    out += [indent + ":"] if not in_prose else []
                    out.append(indent + "    " + line.strip())
                    in_prose = True
                    i += 1
                    continue
            in_prose = False
            out.append(line)
            i += 1
    lines[:] = out


def trailing_prose(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """End a Parameters / Attributes section at a prose paragraph after its entries.

    numpydoc reads everything up to the next header as entries, so a closing paragraph (e.g.
    how a fitted estimator pickles) would become an entry named by its first line. The
    paragraph is moved under a ``Notes`` header instead.
    """
    out: list[str] = []
    in_fields = False
    for i, line in enumerate(lines):
        header = _FIELD_HEADER.match(line)
        underline = i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}
        if line.strip() and underline:
            in_fields = bool(header)
        elif (
            in_fields
            and line.strip()
            and not line[:1].isspace()
            and i > 0
            and not lines[i - 1].strip()
            and _is_prose(line.strip())
        ):
            out += ["Notes", "-----"]
            in_fields = False
        out.append(line)
    lines[:] = out


def _prose_colon(what: str, lines: list[str]) -> bool:
    """An attribute docstring that opens with ``Some prose: more`` (not ``type: text``)."""
    if what not in ("attribute", "property", "data"):
        return False
    first = next((line for line in lines if line.strip()), "")
    head, colon, _ = first.partition(": ")
    return bool(colon) and _is_prose(head.strip())


def _wrap_napoleon(app: Sphinx) -> None:
    """Have napoleon read such an attribute docstring as plain text, not ``type: text``."""
    listeners = app.events.listeners["autodoc-process-docstring"]
    for i, listener in enumerate(listeners):
        handler = listener.handler
        if getattr(handler, "__module__", "") != "sphinx.ext.napoleon":
            continue

        def wrapped(app, what, name, obj, options, lines, _handler=handler):
            if _prose_colon(what, lines):
                what = "object"
            return _handler(app, what, name, obj, options, lines)

        listeners[i] = listener._replace(handler=wrapped)


def skip_field_defaults(
    app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    """Skip a module-level function stored as a class attribute (a dataclass field's default).

    autodoc would document it as a method, beside its entry in the class's Attributes section.
    """
    if what == "class" and inspect.isfunction(obj) and "." not in obj.__qualname__:
        return True
    return None


def _init(app: Sphinx) -> None:
    app.env.tdr_aliases = _aliases()


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.napoleon")
    _wrap_napoleon(app)
    app.connect("builder-inited", _init)
    app.connect("autodoc-process-docstring", data_docstring, priority=400)
    app.connect("autodoc-process-docstring", prose_returns, priority=400)
    app.connect("autodoc-process-docstring", trailing_prose, priority=400)
    app.connect("missing-reference", resolve_alias, priority=400)
    app.connect("autodoc-skip-member", skip_field_defaults)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
