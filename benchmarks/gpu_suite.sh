#!/usr/bin/env bash
# What benchmarks/RESULTS.md still lacks on a GPU, measured in under 8 minutes on one node, printed
# as one Markdown block to paste into RESULTS.md (issue 23, item 5):
#   1. B7-3D at 128³, effective batch 16 (micro-batch 2 x 8 accumulated): samples/s and peak
#      memory, fp32 with TF32 off against TF32, AMP (bf16) and AMP + channels_last
#      (benchmarks/train_step.py, each under a 4 GiB memory fraction: the small cards this targets);
#   2. the frozen-prefix feature cache's epoch speed-up on the GPU (benchmarks/cache.py, no sweep);
#   3. an NCCL DDP smoke test when the node has two GPUs or more (benchmarks/ddp_smoke.py).
#
#     bash benchmarks/gpu_suite.sh [OUT]        # OUT keeps each benchmark's full output
#
# Each part has its own time limit, so one that hangs costs its limit and the block says so.
# Needs a CUDA build of torch; refuses at once on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-$(mktemp -d -t idhhpc-gpu-suite.XXXXXX)}
mkdir -p "$OUT"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_suite: torch sees no CUDA device ($("$PY" -c 'import torch; print(torch.__version__)')): run it on a GPU node" >&2
    exit 2
fi
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())')

part() {  # part NAME SECONDS COMMAND...: run, keep the output, report the exit status
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    echo "#### $name ($((SECONDS - start)) s, exit $rc$([ $rc = 124 ] && echo ": over its ${limit} s limit"))"
    echo '```'
    grep -v -e '^\s*$' -e 'Warning' "$OUT/$name.txt" | tail -n 30
    echo '```'
}

{
    echo "### GPU suite — \`bash benchmarks/gpu_suite.sh\` ($(date -u +%Y-%m-%d))"
    echo
    echo "Device: $("$PY" -c 'import torch; print(", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())), "| torch", torch.__version__, "| CUDA", torch.version.cuda)')"
    echo
    part train_step 240 "$PY" benchmarks/train_step.py --variant b7 --size 128 --micro-batch 2 --accumulate 8 --steps 3 --memory-gib 4
    part feature_cache 150 "$PY" benchmarks/cache.py --out "$OUT/cache" --patients 16 --size 64 --skip-sweep --timed-epochs 2 --device cuda
    if [ "$GPUS" -ge 2 ]; then
        part ddp_nccl 60 "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/ddp_smoke.py
    else
        echo "#### ddp_nccl: skipped, one GPU on this node"
    fi
} | tee "$OUT/block.md"
echo "gpu_suite: the block above is in $OUT/block.md" >&2
