#!/usr/bin/env bash
# Start a two-node Slurm test cluster with accounting (munge, MariaDB, slurmdbd, slurmctld,
# and one slurmd per node, each in its own network namespace) on this machine, from Debian's
# packages, without systemd. Idempotent: installs what is missing, sets up the namespaces and
# the bridge between them (common.sh), rewrites configs from slurm/templates, starts only
# daemons that are not running (restarts Slurm daemons whose config changed), then waits until
# every node is idle and sacct answers.
#
# Run as root:  bash slurm/start-test-cluster.sh
# Overrides:    SLURM_TEST_CLUSTER (idhhpc), SLURM_TEST_GPUS (2), SLURM_TEST_CPUS (nproc, per node),
#               SLURM_TEST_MEMORY_MB (75 % of MemTotal, per node), SLURM_TEST_WAIT_S (90)
set -euo pipefail

export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATES="$HERE/templates"
CONF_DIR=/etc/slurm
CLUSTER="${SLURM_TEST_CLUSTER:-idhhpc}"
GPUS="${SLURM_TEST_GPUS:-2}"
WAIT_S="${SLURM_TEST_WAIT_S:-90}"
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=slurm-test-only
PACKAGES=(munge mariadb-server slurmctld slurmd slurmdbd slurm-client iproute2)

# shellcheck source=slurm/common.sh
source "$HERE/common.sh"

fail() {
    echo "[slurm-test] ERROR: $*" >&2
    for f in "$LOG_DIR"/*.log; do
        [ -f "$f" ] || continue
        echo "----- tail of $f -----" >&2
        tail -n 25 "$f" >&2
    done
    exit 1
}

install_packages() {
    local missing=0 cmd
    for cmd in munged mariadbd slurmctld slurmd slurmdbd sinfo sacctmgr ip; do
        command -v "$cmd" >/dev/null || missing=1
    done
    [ "$missing" = 0 ] && return 0
    log "installing ${PACKAGES[*]}"
    # Keep package scripts from starting services half-configured (no systemd here).
    local own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    local ok=1
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null || ok=0
    [ "$own_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
    [ "$ok" = 1 ] || fail "apt-get could not install ${PACKAGES[*]}"
}

memory_mb() {
    local total_kb
    total_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    echo $((total_kb * 3 / 4 / 1024))
}

# Render TEMPLATE into TARGET with MODE; print "changed" when the content differs.
render() {
    local template=$1 target=$2 mode=$3 tmp
    tmp=$(mktemp)
    sed -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@NODES@|$NODES_HOSTLIST|g" -e "s|@NODE_HOSTNAMES@|$NODES_HOSTLIST|g" \
        -e "s|@NODE_ADDRS@|$PREFIX.[11-$((10 + ${#NODES[@]}))]|g" -e "s|@CTLD_HOST@|$(hostname -s)|g" \
        -e "s|@CTLD_ADDR@|$PREFIX.1|g" -e "s|@CPUS@|$CPUS|g" \
        -e "s|@REAL_MEMORY_MB@|$MEMORY_MB|g" -e "s|@GPUS@|$GPUS|g" -e "s|@LAST_GPU@|$((GPUS - 1))|g" \
        -e "s|@STATE_DIR@|$STATE_DIR|g" -e "s|@RUN_DIR@|$RUN_DIR|g" -e "s|@LOG_DIR@|$LOG_DIR|g" \
        -e "s|@DB_NAME@|$DB_NAME|g" -e "s|@DB_USER@|$DB_USER|g" -e "s|@DB_PASS@|$DB_PASS|g" \
        "$template" >"$tmp"
    chmod "$mode" "$tmp"
    if cmp -s "$tmp" "$target"; then rm -f "$tmp"; else mv -f "$tmp" "$target"; echo changed; fi
}

# slurmd drops a gpu GRES without File=, and warns unless each file is a device:
# give it /dev/null look-alikes (plain files where mknod is not allowed).
make_gpu_placeholders() {
    local i f
    for ((i = 0; i < GPUS; i++)); do
        f="$STATE_DIR/fake-gpu/gpu$i"
        [ -c "$f" ] && continue
        rm -f "$f"
        mknod -m 666 "$f" c 1 3 2>/dev/null || touch "$f"
    done
}

node_addr_of() { echo "$PREFIX.$((10 + $1))"; }   # node i (1-based) of NODES

# The bridge with the controller's address, and per node a namespace joined to it by a veth
# pair, its address, loopback up, and /etc/netns/<ns>/hosts (which `ip netns exec` mounts over
# /etc/hosts): there this machine's host name and every node name resolve to the node
# addresses, so gloo, srun and Ray in a job pick the node's address, not 127.0.0.1.
setup_network() {
    local i node ns veth addr hosts
    PREFIX=$(net_prefix) || fail "no free private network for the cluster"
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        log "creating bridge $BRIDGE ($PREFIX.1/24)"
        ip link add "$BRIDGE" type bridge || fail "cannot create bridge $BRIDGE (needs root and netlink)"
    fi
    ip -4 addr show dev "$BRIDGE" | grep -q "inet $PREFIX.1/" || ip addr add "$PREFIX.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for i in "${!NODES[@]}"; do
        node=${NODES[$i]} ns=$(ns_of "${NODES[$i]}") veth=$(veth_of "${NODES[$i]}") addr=$(node_addr_of $((i + 1)))
        ip netns list | grep -qw "^$ns" || { log "creating network namespace $ns ($addr)"; ip netns add "$ns"; } \
            || fail "ip netns add $ns failed"
        if ! ip link show "$veth" >/dev/null 2>&1; then
            ip netns exec "$ns" ip link del "$NS_DEV" 2>/dev/null || true
            ip link add "$veth" type veth peer name "$NS_DEV" netns "$ns" || fail "cannot create veth pair $veth"
        fi
        ip link set "$veth" master "$BRIDGE"
        ip link set "$veth" up
        ip netns exec "$ns" ip link set lo up
        ip -n "$ns" -4 addr show dev "$NS_DEV" | grep -q "inet $addr/" || ip -n "$ns" addr add "$addr/24" dev "$NS_DEV"
        ip -n "$ns" link set "$NS_DEV" up
        hosts="127.0.0.1 localhost\n$addr $(hostname) $(hostname -s)\n"
        for j in "${!NODES[@]}"; do hosts+="$(node_addr_of $((j + 1))) ${NODES[$j]}\n"; done
        mkdir -p "/etc/netns/$ns"
        printf "$hosts" >"/etc/netns/$ns/hosts"
    done
}

write_configs() {
    CPUS="${SLURM_TEST_CPUS:-$(nproc)}"
    MEMORY_MB="${SLURM_TEST_MEMORY_MB:-$(memory_mb)}"
    mkdir -p "$CONF_DIR" "$STATE_DIR/ctld" "$STATE_DIR/fake-gpu" "$RUN_DIR" "$LOG_DIR"
    for node in "${NODES[@]}"; do mkdir -p "$STATE_DIR/d/$node"; done
    make_gpu_placeholders
    SLURM_CHANGED=$(render "$TEMPLATES/slurm.conf.in" "$CONF_DIR/slurm.conf" 644)
    SLURM_CHANGED+=$(render "$TEMPLATES/gres.conf.in" "$CONF_DIR/gres.conf" 644)
    DBD_CHANGED=$(render "$TEMPLATES/slurmdbd.conf.in" "$CONF_DIR/slurmdbd.conf" 600)
    log "nodes $NODES_HOSTLIST at $PREFIX.[11-$((10 + ${#NODES[@]}))], each CPUs=$CPUS RealMemory=${MEMORY_MB}MB gpu:$GPUS (count only)"
}

start_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating munge key"
        mkdir -p /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    daemon_running munged /run/munge/munged.pid && return 0
    log "starting munged"
    runuser -u munge -- munged --force --pid-file=/run/munge/munged.pid \
        || fail "munged did not start (see /var/log/munge/munged.log)"
    munge -n | unmunge >/dev/null || fail "munge round trip failed"
}

mariadb_up() { mariadb-admin --silent ping >/dev/null 2>&1; }

start_mariadb() {
    mariadb_up && return 0
    install -d -o mysql -g mysql -m 755 /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
        log "initialising MariaDB data dir"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOG_DIR/mariadb-install.log" 2>&1 \
            || fail "mariadb-install-db failed"
    fi
    log "starting MariaDB"
    setsid mariadbd --user=mysql --datadir=/var/lib/mysql --bind-address=127.0.0.1 \
        --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mysqld.pid \
        --log-error="$LOG_DIR/mariadb.log" </dev/null >/dev/null 2>&1 &
    for _ in $(seq 60); do mariadb_up && return 0; sleep 0.5; done
    fail "MariaDB did not answer within 30 s"
}

setup_database() {
    mariadb --protocol=socket <<SQL || fail "could not create database $DB_NAME / user $DB_USER"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
}

start_slurmdbd() {
    [ -z "$DBD_CHANGED" ] || stop_daemon slurmdbd "$RUN_DIR/slurmdbd.pid" || fail "could not restart slurmdbd"
    if ! daemon_running slurmdbd "$RUN_DIR/slurmdbd.pid"; then
        log "starting slurmdbd"
        slurmdbd || fail "slurmdbd did not start"
    fi
    for _ in $(seq 60); do sacctmgr -n -P show cluster >/dev/null 2>&1 && return 0; sleep 0.5; done
    fail "slurmdbd did not answer sacctmgr within 30 s"
}

register_cluster() {
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || fail "sacctmgr add cluster $CLUSTER failed"
    fi
}

start_slurm_daemons() {
    # The marker keeps a restart owed across a start that failed after rewriting the config.
    local pending=$RUN_DIR/slurm-restart-pending
    [ -z "$SLURM_CHANGED" ] || touch "$pending"
    if [ -e "$pending" ]; then
        log "config changed: restarting slurmctld and slurmd"
        stop_daemon slurmd "$RUN_DIR/slurmd.pid" || fail "could not stop the single-node slurmd"
        for node in "${NODES[@]}"; do
            stop_daemon slurmd "$RUN_DIR/slurmd-$node.pid" || fail "could not restart slurmd of $node"
        done
        stop_daemon slurmctld "$RUN_DIR/slurmctld.pid" || fail "could not restart slurmctld"
        rm -f "$pending"
    fi
    if ! daemon_running slurmctld "$RUN_DIR/slurmctld.pid"; then
        log "starting slurmctld"
        slurmctld || fail "slurmctld did not start"
    fi
    for node in "${NODES[@]}"; do
        if ! daemon_running slurmd "$RUN_DIR/slurmd-$node.pid"; then
            log "starting slurmd of $node in namespace $(ns_of "$node")"
            in_node "$node" slurmd -N "$node" || fail "slurmd of $node did not start"
        fi
    done
}

node_state() { sinfo -h -n "$1" -o %T 2>/dev/null | head -n1; }

wait_until_ready() {
    local node state="" deadline=$((SECONDS + WAIT_S))
    for node in "${NODES[@]}"; do
        while [ $SECONDS -lt $deadline ]; do
            state=$(node_state "$node")
            case "$state" in
                idle | mixed | allocated | completing) break ;;
                down* | drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
            esac
            sleep 1
        done
        case "$state" in idle | mixed | allocated | completing) ;;
            *) fail "node $node is '${state:-unknown}' after ${WAIT_S}s, not idle" ;; esac
    done
    sacct -n -X -S now-1hours >/dev/null || fail "sacct does not answer"
    log "ready: $(sinfo -h -N -o '%N %o %T' | sort -u | tr '\n' ';') partitions: $(sinfo -h -o %P | tr '\n' ' ')"
}

main() {
    [ "$(id -u)" = 0 ] || { echo "start-test-cluster.sh must run as root" >&2; exit 1; }
    local t0=$SECONDS
    install_packages
    setup_network
    write_configs
    start_munge
    start_mariadb
    setup_database
    start_slurmdbd
    register_cluster
    start_slurm_daemons
    wait_until_ready
    log "started in $((SECONDS - t0)) s"
}

main "$@"
