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
    # A slurmd still retrying its registration with an unreachable slurmctld ignores SIGTERM.
    log "$name (pid $pid) did not stop within 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
    for _ in $(seq 25); do pid_alive "$pid" || return 0; sleep 0.2; done
    echo "[slurm-test] ERROR: $name (pid $pid) did not stop after SIGKILL" >&2
    return 1
}

# ---- the test cluster's private network (start-test-cluster.sh sets it up, stop removes it) ----
# Each node's slurmd runs in its own network namespace (idhhpc-<node>), joined by a veth pair to
# a bridge in the root namespace. The bridge holds the controller's address (slurmctld and
# slurmdbd listen there), node i gets .1<i>. The /24 is chosen once from 10.213.0-254.0 (the
# first not routed on this machine) and kept in $STATE_DIR/net-prefix. Nothing is routed
# beyond it: the namespaces have no default route, so their traffic stays on this machine.
NODES=(node1 node2)
NODES_HOSTLIST="node[1-${#NODES[@]}]"
BRIDGE=idhhpc-br0
ns_of() { echo "idhhpc-$1"; }
veth_of() { echo "idh-$1"; }          # the root-namespace end of NODE's veth pair
NS_DEV=idh0                            # the end inside NODE's namespace

# Print the /24 prefix (three octets) of the cluster network, choosing and saving it if needed.
net_prefix() {
    local file=$STATE_DIR/net-prefix x
    if [ -s "$file" ]; then cat "$file"; return 0; fi
    for x in $(seq 0 254); do
        if [ -z "$(ip -4 route show to match "10.213.$x.1" 2>/dev/null | grep -v '^default')" ] &&
            ! ip -4 -o addr show | grep -q " 10\.213\.$x\."; then
            mkdir -p "$STATE_DIR"
            echo "10.213.$x" | tee "$file"
            return 0
        fi
    done
    echo "[slurm-test] ERROR: no free 10.213.x.0/24 on this machine" >&2
    return 1
}

# in_node NODE CMD...: run CMD in NODE's network namespace with the node's /etc/hosts.
# Not `ip netns exec`: that remounts /sys for the namespace, which hides the cgroup mounts
# slurmd needs at start. Here only the network namespace changes, and a private mount
# namespace (slave: later mounts still propagate in) binds /etc/netns/<ns>/hosts on /etc/hosts.
in_node() {
    local ns
    ns=$(ns_of "$1")
    shift
    nsenter --net="/run/netns/$ns" -- unshare --mount --propagation slave -- \
        sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "/etc/netns/$ns/hosts" "$@"
}

# Remove the namespaces, veth pairs, bridge and per-namespace /etc/netns files (if present).
remove_network() {
    local node ns
    for node in "${NODES[@]}"; do
        ns=$(ns_of "$node")
        ip netns del "$ns" 2>/dev/null || true
        ip link del "$(veth_of "$node")" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    ip link del "$BRIDGE" 2>/dev/null || true
}
