# shellcheck shell=bash disable=SC2034
# Shared by start-test-cluster.sh and stop-test-cluster.sh (sourced, not run).
STATE_DIR=/var/lib/slurm-test
RUN_DIR=/run/slurm-test
LOG_DIR=/var/log/slurm-test

log() { echo "[slurm-test] $*"; }

# True while PID exists and is not a zombie.
pid_alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# Print the pid from PIDFILE when it names a live process whose command is NAME.
daemon_pid() {
    local name=$1 pidfile=$2 pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    pid_alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && echo "$pid"
}

daemon_running() { daemon_pid "$@" >/dev/null; }

# SIGTERM NAME and wait for the process itself to exit, not just its pid file
# (slurmctld removes the pid file before it has released its port).
stop_daemon() {
    local name=$1 pidfile=$2 pid
    pid=$(daemon_pid "$name" "$pidfile") || return 0
    log "stopping $name (pid $pid)"
    kill "$pid"
    for _ in $(seq 75); do pid_alive "$pid" || return 0; sleep 0.2; done
    echo "[slurm-test] ERROR: $name (pid $pid) did not stop within 15 s" >&2
    return 1
}
