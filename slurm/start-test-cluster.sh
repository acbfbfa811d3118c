#!/usr/bin/env bash
# Start a single-node Slurm test cluster with accounting (munge, MariaDB, slurmdbd,
# slurmctld, slurmd) on this machine, from Debian's packages, without systemd.
# Idempotent: installs what is missing, rewrites configs from slurm/templates,
# starts only daemons that are not running (restarts Slurm daemons whose config
# changed), then waits until the node is idle and sacct answers.
#
# Run as root:  bash slurm/start-test-cluster.sh
# Overrides:    SLURM_TEST_CLUSTER (idhhpc), SLURM_TEST_GPUS (2), SLURM_TEST_CPUS (nproc),
#               SLURM_TEST_MEMORY_MB (75 % of MemTotal), SLURM_TEST_WAIT_S (90)
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
PACKAGES=(munge mariadb-server slurmctld slurmd slurmdbd slurm-client)

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
    for cmd in munged mariadbd slurmctld slurmd slurmdbd sinfo sacctmgr; do
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
    sed -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$CPUS|g" \
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

write_configs() {
    NODE=$(hostname -s)
    CPUS="${SLURM_TEST_CPUS:-$(nproc)}"
    MEMORY_MB="${SLURM_TEST_MEMORY_MB:-$(memory_mb)}"
    mkdir -p "$CONF_DIR" "$STATE_DIR/ctld" "$STATE_DIR/d" "$STATE_DIR/fake-gpu" "$RUN_DIR" "$LOG_DIR"
    make_gpu_placeholders
    SLURM_CHANGED=$(render "$TEMPLATES/slurm.conf.in" "$CONF_DIR/slurm.conf" 644)
    SLURM_CHANGED+=$(render "$TEMPLATES/gres.conf.in" "$CONF_DIR/gres.conf" 644)
    DBD_CHANGED=$(render "$TEMPLATES/slurmdbd.conf.in" "$CONF_DIR/slurmdbd.conf" 600)
    log "node $NODE: CPUs=$CPUS RealMemory=${MEMORY_MB}MB gpu:$GPUS (count only)"
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
    if [ -n "$SLURM_CHANGED" ]; then
        log "config changed: restarting slurmctld and slurmd"
        stop_daemon slurmd "$RUN_DIR/slurmd.pid" || fail "could not restart slurmd"
        stop_daemon slurmctld "$RUN_DIR/slurmctld.pid" || fail "could not restart slurmctld"
    fi
    if ! daemon_running slurmctld "$RUN_DIR/slurmctld.pid"; then
        log "starting slurmctld"
        slurmctld || fail "slurmctld did not start"
    fi
    if ! daemon_running slurmd "$RUN_DIR/slurmd.pid"; then
        log "starting slurmd"
        slurmd || fail "slurmd did not start"
    fi
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1; }

wait_until_ready() {
    local state="" deadline=$((SECONDS + WAIT_S))
    while [ $SECONDS -lt $deadline ]; do
        state=$(node_state)
        case "$state" in
            idle | mixed | allocated) break ;;
            down* | drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    case "$state" in idle | mixed | allocated) ;; *) fail "node $NODE is '${state:-unknown}' after ${WAIT_S}s, not idle" ;; esac
    sacct -n -X -S now-1hours >/dev/null || fail "sacct does not answer"
    log "ready: node $NODE is $state; partitions: $(sinfo -h -o %P | tr '\n' ' ')"
}

main() {
    [ "$(id -u)" = 0 ] || { echo "start-test-cluster.sh must run as root" >&2; exit 1; }
    local t0=$SECONDS
    install_packages
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
