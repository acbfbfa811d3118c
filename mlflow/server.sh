#!/usr/bin/env bash
# Start an MLflow tracking server in the background, write its pid file, wait for /health.
#
#   mlflow/server.sh [--store-dir DIR] [--backend-store-uri URI] [--artifacts DIR]
#                    [--host HOST] [--port PORT] [--workers N] [--timeout SECONDS]
#
# Defaults (env overrides in brackets): store dir ./mlflow-store [IDHHPC_MLFLOW_DIR] holding
# mlflow.db, mlartifacts/, server.pid and server.log; host 127.0.0.1 [IDHHPC_MLFLOW_HOST];
# port 5000 [IDHHPC_MLFLOW_PORT]. --backend-store-uri accepts postgresql://... instead of SQLite.
set -euo pipefail

store_dir=${IDHHPC_MLFLOW_DIR:-$PWD/mlflow-store}
host=${IDHHPC_MLFLOW_HOST:-127.0.0.1}
port=${IDHHPC_MLFLOW_PORT:-5000}
backend_uri=""
artifacts=""
workers=1
timeout=120

while [[ $# -gt 0 ]]; do
    case $1 in
        --store-dir) store_dir=$2; shift 2 ;;
        --backend-store-uri) backend_uri=$2; shift 2 ;;
        --artifacts) artifacts=$2; shift 2 ;;
        --host) host=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --workers) workers=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "server.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

mkdir -p "$store_dir"
store_dir=$(cd "$store_dir" && pwd)
backend_uri=${backend_uri:-sqlite:///$store_dir/mlflow.db}
artifacts=${artifacts:-$store_dir/mlartifacts}
pid_file=$store_dir/server.pid
log_file=$store_dir/server.log
python=${PYTHON:-python}

if [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    echo "server.sh: a server is already running (pid $(cat "$pid_file"), $pid_file)" >&2
    exit 1
fi

# setsid: the server and its uvicorn workers form one process group that stop.sh can end.
setsid "$python" -m mlflow server \
    --backend-store-uri "$backend_uri" \
    --artifacts-destination "$artifacts" --serve-artifacts \
    --host "$host" --port "$port" --workers "$workers" \
    >>"$log_file" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pid_file"

url="http://$host:$port"
[[ $host == 0.0.0.0 ]] && url="http://127.0.0.1:$port"
deadline=$((SECONDS + timeout))
until "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "$url/health" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
        echo "server.sh: mlflow server did not answer $url/health; last lines of $log_file:" >&2
        tail -n 20 "$log_file" >&2
        kill -- "-$pid" 2>/dev/null || true
        rm -f "$pid_file"
        exit 1
    fi
    sleep 0.5
done
echo "MLFLOW_TRACKING_URI=http://$host:$port  (pid $pid, log $log_file)"
