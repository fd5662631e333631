#!/usr/bin/env bash
# Create benchmarks/.venv-torchdr: an isolated environment holding TorchDR from PyPI,
# the peer that the benchmark harness runs in a subprocess (it is a different package
# from torchdr-sc, so it must not share our environment).
#
# torch is installed first and pinned, so that installing torchdr cannot pull a different
# (for example a CUDA) build of torch. Override with TORCH_SPEC, e.g.
#   TORCH_SPEC="torch==2.13.0" PYTHON=python3.11 bash benchmarks/setup_torchdr_venv.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$HERE/.venv-torchdr}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCHDR_SPEC="${TORCHDR_SPEC:-torchdr}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

"$PY" -m pip install --upgrade pip >/dev/null || echo "(pip not upgraded; going on)"
echo "installing $TORCH_SPEC"
"$PY" -m pip install "$TORCH_SPEC" numpy
TORCH_BEFORE="$("$PY" -c 'import torch; print(torch.__version__)')"

# torchdr imports matplotlib at import time without declaring it as a dependency.
echo "installing $TORCHDR_SPEC faiss-cpu matplotlib (torch pinned to $TORCH_BEFORE)"
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==$TORCH_BEFORE" >"$CONSTRAINTS"
"$PY" -m pip install -c "$CONSTRAINTS" "$TORCHDR_SPEC" faiss-cpu matplotlib psutil

TORCH_AFTER="$("$PY" -c 'import torch; print(torch.__version__)')"
if [ "$TORCH_BEFORE" != "$TORCH_AFTER" ]; then
    echo "error: torch changed from $TORCH_BEFORE to $TORCH_AFTER while installing torchdr" >&2
    exit 1
fi
"$PY" - <<'EOF'
import importlib.metadata as md

import faiss  # noqa: F401
import torch
import torchdr

print(f"torchdr {md.version('torchdr')}, torch {torch.__version__}, "
      f"faiss-cpu {md.version('faiss-cpu')}, cuda available: {torch.cuda.is_available()}")
EOF
echo "ok: $PY"
