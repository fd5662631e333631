#!/usr/bin/env bash
# Create benchmarks/.venv-scanpy: the environment the scanpy peer runs in.
#
# Why a separate environment: with pynndescent 0.7 (what a fresh install of umap-learn pulls
# next to torchdr-sc's test extras), scanpy 1.11.5's `sc.pp.neighbors` fails above 4096 cells
# ("'csr_array' object has no attribute 'getnnz'": pynndescent's transformer now returns a
# sparse array, scanpy calls a sparse-matrix method on it). Pinning pynndescent 0.5.13 here
# keeps our own environment untouched and gives scanpy the stack it is released against.
# The harness picks this interpreter for the scanpy runs when it exists (--scanpy-python).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$HERE/.venv-scanpy}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install "scanpy==1.11.5" "anndata==0.12.19" "umap-learn==0.5.12" \
    "pynndescent==0.5.13" "scipy<1.17" "scikit-learn<1.8" numpy psutil threadpoolctl
"$PY" - <<'PYEOF'
import importlib.metadata as md

import numpy as np
import scanpy as sc
from anndata import AnnData

x = np.random.default_rng(0).normal(size=(5000, 20)).astype(np.float32)
adata = AnnData(x)
sc.pp.neighbors(adata, use_rep="X")  # fails above 4096 cells with the broken stack
print(", ".join(f"{p} {md.version(p)}" for p in ("scanpy", "pynndescent", "scipy", "umap-learn")))
PYEOF
echo "ok: $PY"
