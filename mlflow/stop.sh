#!/usr/bin/env bash
# Stop the tracking server started by server.sh: mlflow/stop.sh [--store-dir DIR]
set -euo pipefail

store_dir=${IDHHPC_MLFLOW_DIR:-$PWD/mlflow-store}
[[ ${1:-} == --store-dir ]] && store_dir=$2
pid_file=$store_dir/server.pid

if [[ ! -f $pid_file ]]; then
    echo "stop.sh: no pid file $pid_file; nothing to stop" >&2
    exit 0
fi
pid=$(cat "$pid_file")
kill -TERM -- "-$pid" 2>/dev/null || true
for _ in $(seq 60); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.25
done
kill -KILL -- "-$pid" 2>/dev/null || true
rm -f "$pid_file"
echo "stopped mlflow server (pid $pid)"
