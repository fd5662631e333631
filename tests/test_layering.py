"""The package's layering, checked on its source: every import of a torchdr_sc module.

Two rules (CONTRIBUTING.md, section 1):

- no module imports an underscore module or name of *another* package (the top-level
  shared internals ``_validation``, ``_device``, ``_logging``, ``_random``, ``_threads``, ``_reduce``
  and ``_version`` excepted);
- imports only point down the layers: ``cli`` -> ``atlas`` -> ``tl`` / ``pp`` -> ``adata``
  -> ``estimators`` -> core, and inside the core along the pipeline.

Lazy imports inside functions count as much as the ones at the top of a module.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import torchdr_sc

ROOT = Path(torchdr_sc.__file__).parent
PACKAGE = "torchdr_sc"

#: Rank of every top-level part of the package: a part may import parts of rank <= its own.
LAYERS: dict[str, int] = {
    # shared internals (importable anywhere)
    "_validation": 0,
    "_device": 0,
    "_logging": 0,
    "_random": 0,
    "_threads": 0,
    "_reduce": 0,
    "_version": 0,
    # core, in pipeline order
    "distributed": 1,
    "progress": 1,
    "knn": 2,
    "affinity": 3,
    "objective": 4,
    "optimize": 5,
    "steppers": 5,
    "initialization": 5,
    "quality": 5,  # densMAP's radii use the UMAP graph (affinity, knn, objective.density)
    "streaming": 6,
    # estimators, then the AnnData layer
    "estimators": 10,
    "adata": 11,
    "tl": 12,
    "pp": 12,
    "atlas": 13,
    "cli": 14,
    # the package facade re-exports from every layer
    "__init__": 99,
}
SHARED_INTERNALS = {name for name, rank in LAYERS.items() if rank == 0}


@dataclass(frozen=True)
class Import:
    """One import of a torchdr_sc module found in the source."""

    source: str  # importing module, dotted, e.g. 'torchdr_sc.tl._umap'
    target: str  # imported module, dotted
    names: tuple[str, ...]  # names taken from it ('from target import a, b')
    line: int

    def where(self) -> str:
        """``module:line`` for messages."""
        return f"{self.source}:{self.line}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def package_imports() -> list[Import]:
    """Every import of a torchdr_sc module in the package's source files."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        is_package = path.name == "__init__.py"
        if is_package:
            module = module.rsplit(".__init__", 1)[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node)
                names = tuple(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(PACKAGE):
                        found.append(Import(module, alias.name, (), node.lineno))
                continue
            else:
                continue
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                found.append(Import(module, target, names, node.lineno))
    return found


def _part(module: str) -> str:
    """Top-level part of a dotted module name: 'torchdr_sc.knn._faiss' -> 'knn'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_part(name: str) -> bool:
    return (ROOT / f"{name}.py").exists() or (ROOT / name / "__init__.py").exists()


def _expand(imp: Import) -> list[str]:
    """The modules an import reaches: ``from torchdr_sc import tl`` reaches ``torchdr_sc.tl``.

    A name of the package itself that is not a module (``__version__``) reaches its facade.
    """
    if imp.target != PACKAGE:
        return [imp.target]
    return [f"{PACKAGE}.{name}" if _is_part(name) else PACKAGE for name in imp.names]


def cross_package_private(imp: Import) -> list[str]:
    """Underscore modules or names of another part that this import uses."""
    problems = []
    for target in _expand(imp):
        if _part(target) == _part(imp.source):
            continue
        inner = target.split(".")[1:]
        private_mods = [p for p in inner if p.startswith("_") and p not in SHARED_INTERNALS]
        private_names = [
            n
            for n in imp.names
            if n.startswith("_")
            and not n.startswith("__")
            and _part(target) not in SHARED_INTERNALS
        ]
        if private_mods or private_names:
            problems.append(f"{imp.where()} imports {target} {list(imp.names) or ''}".strip())
    return problems


def upward(imp: Import) -> list[str]:
    """Imports of a part of a higher layer than the importing one."""
    src = _part(imp.source)
    problems = []
    for target in _expand(imp):
        dst = _part(target)
        if dst == src:
            continue
        if dst not in LAYERS or src not in LAYERS:
            problems.append(f"{imp.where()}: {src!r} or {dst!r} has no layer in LAYERS")
        elif LAYERS[dst] > LAYERS[src]:
            problems.append(
                f"{imp.where()} ({src}, layer {LAYERS[src]}) imports {target} "
                f"({dst}, layer {LAYERS[dst]})"
            )
    return problems


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(_module_name(p).removesuffix(".__init__")) for p in ROOT.rglob("*.py")}
    assert parts - set(LAYERS) == set(), "give each new top-level module a layer in LAYERS"


def test_no_import_of_another_package_private_module_or_name():
    problems = [p for imp in package_imports() for p in cross_package_private(imp)]
    assert problems == []


def test_imports_point_down_the_layers():
    problems = [p for imp in package_imports() for p in upward(imp)]
    assert problems == []


# ---- the checks themselves fail on the mistakes they are for ----------------------------
@pytest.mark.parametrize(
    ("source", "target", "names"),
    [
        ("torchdr_sc.tl._umap", "torchdr_sc.adata._run", ("run_embedding",)),
        ("torchdr_sc.streaming._fit", "torchdr_sc.initialization", ("_rescale",)),
        ("torchdr_sc.atlas._job", "torchdr_sc", ("_anndata",)),
    ],
)
def test_private_check_catches_cross_package_private_imports(source, target, names):
    assert cross_package_private(Import(source, target, names, 1))


@pytest.mark.parametrize(
    ("source", "target", "names"),
    [
        ("torchdr_sc.tl._umap", "torchdr_sc.tl._docs", ("doc_params",)),  # same package
        ("torchdr_sc.knn.registry", "torchdr_sc._validation", ("check_option",)),  # shared
        ("torchdr_sc.pp._neighbors", "torchdr_sc.adata", ("log",)),  # public seam
    ],
)
def test_private_check_allows_public_seams(source, target, names):
    assert cross_package_private(Import(source, target, names, 1)) == []


@pytest.mark.parametrize(
    ("source", "target", "names"),
    [
        ("torchdr_sc.adata.run", "torchdr_sc", ("tl",)),  # the old demo's arrow
        ("torchdr_sc.estimators._base", "torchdr_sc.adata", ("log",)),
        ("torchdr_sc.knn.registry", "torchdr_sc.affinity", ("UMAPAffinity",)),
        ("torchdr_sc.distributed", "torchdr_sc.objective.exact", ("RowShard",)),
    ],
)
def test_layer_check_catches_upward_imports(source, target, names):
    assert upward(Import(source, target, names, 1))


def test_the_walk_sees_lazy_imports_inside_functions():
    found = {(i.source, i.target) for i in package_imports()}
    # tl functions import their estimator inside the function body
    assert ("torchdr_sc.tl._umap", "torchdr_sc.estimators") in found
