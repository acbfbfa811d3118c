#!/usr/bin/env bash
# Start an MLflow tracking server in the background, write its pid file, wait for /health.
#
#   mlflow/server.sh [--store-dir DIR] [--backend-store-uri URI] [--artifacts DIR]
#                    [--host HOST [--expose]] [--port PORT] [--workers N] [--timeout SECONDS]
#
# Defaults (env overrides in brackets): store dir ./mlflow-store [IDHHPC_MLFLOW_DIR] holding
# mlflow.db, mlartifacts/, server.pid and server.log; host 127.0.0.1 [IDHHPC_MLFLOW_HOST];
# port 5000 [IDHHPC_MLFLOW_PORT]. --backend-store-uri accepts postgresql://... instead of SQLite.
# A host other than loopback makes every run readable and writable, without authentication, by
# anyone who reaches the port: it needs --expose [IDHHPC_MLFLOW_EXPOSE=1], prints a warning, and
# accepts only the Host headers in IDHHPC_MLFLOW_ALLOWED_HOSTS (default: this host's names and
# addresses and localhost, at PORT). Put an authenticating proxy (TLS) in front beyond a trusted network.
set -euo pipefail

store_dir=${IDHHPC_MLFLOW_DIR:-$PWD/mlflow-store}
host=${IDHHPC_MLFLOW_HOST:-127.0.0.1}
port=${IDHHPC_MLFLOW_PORT:-5000}
backend_uri=""
artifacts=""
workers=1
timeout=120
expose=${IDHHPC_MLFLOW_EXPOSE:-0}

while [[ $# -gt 0 ]]; do
    case $1 in
        --store-dir) store_dir=$2; shift 2 ;;
        --backend-store-uri) backend_uri=$2; shift 2 ;;
        --artifacts) artifacts=$2; shift 2 ;;
        --host) host=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --workers) workers=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --expose) expose=1; shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "server.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

case $host in
    127.*|localhost|::1|'[::1]') exposed=0 ;;
    *) exposed=1 ;;
esac
security=()
if ((exposed)); then
    if [[ $expose != 1 ]]; then
        echo "server.sh: --host $host makes MLflow reachable from the network with NO authentication:" \
             "anyone who reaches port $port can read, change and delete every run. Re-run with --expose" \
             "(or IDHHPC_MLFLOW_EXPOSE=1) if that is what you want; the default host is 127.0.0.1." >&2
        exit 2
    fi
    names=("$(hostname -f 2>/dev/null || hostname)" "$(hostname -s)" localhost 127.0.0.1)
    for address in $(hostname -I 2>/dev/null); do
        [[ $address == *:* ]] && address="[$address]"   # IPv6 in a Host header is bracketed
        names+=("$address")
    done
    default_hosts=$(printf "%s:$port," "${names[@]}" | tr ',' '\n' | awk '!seen[$0]++' | paste -sd, -)
    allowed=${IDHHPC_MLFLOW_ALLOWED_HOSTS:-${default_hosts%,}}
    security=(--allowed-hosts "$allowed")
    echo "server.sh: WARNING: MLflow listens on $host:$port with NO authentication (accepted Host" \
         "headers: $allowed)" >&2
fi

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
    --host "$host" --port "$port" --workers "$workers" "${security[@]}" \
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
