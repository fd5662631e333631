#!/usr/bin/env bash
# The prepared GPU check (issue 30): run it as one command when a GPU machine is lent.
#
#   bash benchmarks/gpu_check.sh            # results in benchmarks/results/ (and $OUT if set)
#
# Within about 10 minutes on one H100 / H200, each step under its own time limit so that a
# slow step cannot eat the others' time:
#   1. the CUDA tests (`pytest -m cuda`: the CUDA kNN, affinity, epoch, Triton kernel, FFT);
#   2. UMAP, TSNE and InfoTSNE at 1M cells on the GPU (synthetic 50-D data, our code only:
#      kNN / affinity / optimisation times, peak GPU and host memory, quality on 10k cells);
#   3. UMAP and InfoTSNE at 10M cells on the GPU;
#   4. with 2 GPUs or more: UMAP at 1M cells on 2 GPUs with NCCL (torchrun), against 1 GPU.
# The synthetic data is generated on the machine (the atlas's 10M .npy, 2 GB, is too large to
# send there). A step that fails or runs out of time is reported and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
results=benchmarks/results
log=$results/gpu-check.log
mkdir -p "$results"
: > "$log"
step() {  # step LIMIT_S NAME COMMAND...: run, time and log one step
    local limit=$1 name=$2; shift 2
    local t0=$SECONDS
    echo "== $name (limit ${limit} s): $*" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tail -n 60 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $(( SECONDS - t0 )) s" | tee -a "$log"
}
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to torch: nothing to check here" | tee -a "$log"
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$log"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$log"
n_gpus=$(python -c "import torch; print(torch.cuda.device_count())")
step 150 "CUDA tests" python -m pytest -q -p no:cacheprovider -m cuda tests
step 150 "1M on the GPU" python -m benchmarks.gpu --n 1000000 --methods umap tsne infotsne \
    --peers none --no-anndata --budget 120 --tag gpu-check-1m
step 200 "10M on the GPU" python -m benchmarks.gpu --n 10000000 --methods umap infotsne \
    --peers none --no-anndata --budget 180 --tag gpu-check-10m
if [ "$n_gpus" -ge 2 ]; then
    step 90 "1M on 2 GPUs (NCCL)" python -m torch.distributed.run --standalone \
        --nproc_per_node 2 benchmarks/gpu_nccl.py --n 1000000
    step 60 "1M on 1 GPU (same script)" python -m torch.distributed.run --standalone \
        --nproc_per_node 1 benchmarks/gpu_nccl.py --n 1000000
fi
if [ -n "${OUT:-}" ]; then
    cp "$log" "$results"/gpu-check-*.md "$results"/gpu-check-*.jsonl "$results"/gpu-nccl-*.json \
        "$OUT"/ 2>/dev/null || true
fi
