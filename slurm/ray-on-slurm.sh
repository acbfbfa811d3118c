#!/usr/bin/env bash
# Run the `tune` stage on one Ray cluster spanning a whole Slurm allocation.
#
# Usage (from the repository root, with the project's virtualenv active; sbatch passes the
# environment on):
#   sbatch --nodes=2 --ntasks-per-node=1 --cpus-per-task=8 --gpus-per-node=1 --time=04:00:00 \
#          slurm/ray-on-slurm.sh --job jobs/sweep.yaml [--set tune.gpus_per_trial=0.5 ...]
#
# Every argument goes to `python -m idhhpc.launch --executor debug --stages tune`. The script
# starts a Ray head on the first node and a worker on every other node (one `srun` step each,
# so Slurm accounts and cleans them up), runs the sweep in this batch step with RAY_ADDRESS
# pointing at the head, and stops Ray when the sweep ends or the job is cancelled. The sweep's
# storage is the job's work dir (`<work_dir>/tune/sweep`), which must be on a file system all
# nodes see: submit the same command again after a failure or time-out and the sweep resumes.
# Ray 2.60 protects a cluster with a token (~/.ray/auth_token, made by the head when missing):
# every node must see the same file (a shared home, or RAY_AUTH_TOKEN_PATH on the shared file
# system). Settings: RAY_PORT (6379), IDHHPC_PYTHON (python), RAY_START_TIMEOUT_S (120),
# RAY_AUTH_MODE (token), RAY_HEAD_IP (the head's address; default: its Slurm NodeAddr).
#
# Every Ray process listens on its node's Slurm NodeAddr (node-addr.sh): the network Slurm uses
# for the node, not whichever NIC `hostname -I` lists first. On the single-node test cluster
# that is 127.0.0.1, so Ray stays on loopback.
set -euo pipefail
# sbatch runs a copy of this script from its spool directory: look for node-addr.sh beside the
# original too (submitted from the repository root, or with --chdir to it).
for dir in "$(dirname "${BASH_SOURCE[0]}")" "${SLURM_SUBMIT_DIR:-.}/slurm" "$PWD/slurm"; do
    # shellcheck source=slurm/node-addr.sh
    if [[ -f $dir/node-addr.sh ]]; then . "$dir/node-addr.sh"; break; fi
done
if ! declare -F node_addr >/dev/null; then
    echo "ray-on-slurm: slurm/node-addr.sh not found: submit from the repository root" >&2
    exit 1
fi

PYTHON=${IDHHPC_PYTHON:-python}
PORT=${RAY_PORT:-6379}
CPUS=${SLURM_CPUS_PER_TASK:-1}
GPUS=${SLURM_GPUS_ON_NODE:-0}
TIMEOUT_S=${RAY_START_TIMEOUT_S:-120}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
: "${SLURM_JOB_ID:?run this script through sbatch (or inside salloc)}"

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD=${NODES[0]}
HEAD_IP=${RAY_HEAD_IP:-$(node_addr "$HEAD")}
export RAY_ADDRESS="$HEAD_IP:$PORT"
RAY_TMP="/tmp/ray-$SLURM_JOB_ID"   # short: Ray's socket paths must stay under ~100 characters
STEPS=()

cleanup() {
    # SIGTERM to each srun step reaches its `ray start --block`, which stops the Ray processes it
    # started and nothing else (`ray stop` would also hit other jobs' Ray on a shared node).
    for pid in "${STEPS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

echo "ray-on-slurm: head $HEAD ($RAY_ADDRESS), ${#NODES[@]} node(s), $CPUS CPUs and $GPUS GPUs each"
srun --overlap --nodes=1 --ntasks=1 -w "$HEAD" \
    ray start --head --block --node-ip-address="$HEAD_IP" --port="$PORT" --num-cpus="$CPUS" --num-gpus="$GPUS" \
    --temp-dir="$RAY_TMP" --include-dashboard=false &
STEPS+=($!)

deadline=$((SECONDS + TIMEOUT_S))
until ray status --address="$RAY_ADDRESS" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "ray-on-slurm: head did not start in ${TIMEOUT_S}s" >&2; exit 1; fi
    sleep 2
done

for node in "${NODES[@]:1}"; do
    srun --overlap --nodes=1 --ntasks=1 -w "$node" \
        ray start --block --address="$RAY_ADDRESS" --node-ip-address="$(node_addr "$node")" \
        --num-cpus="$CPUS" --num-gpus="$GPUS" &
    STEPS+=($!)
done

"$PYTHON" -m idhhpc.launch --executor debug --stages tune "$@"
