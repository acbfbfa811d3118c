#!/usr/bin/env bash
# A second, private single-node Slurm cluster ("faults") beside the shared test cluster, for
# experiments that would disturb its other users: taking the node DOWN, restarting slurmctld,
# real preemption. Rendered from slurm/templates like start-test-cluster.sh, with its own ports
# (7817-7819), state/log/pid directories, slurmdbd database, FirstJobId=900000, and two extra
# partitions for preemption: low (PriorityTier=1, PreemptMode=REQUEUE, GraceTime=20) and high
# (PriorityTier=10). Node "fnode" (NodeHostname this host, NodeAddr 127.0.0.1), 2 CPUs.
#
# Needs root and the packages and MariaDB that start-test-cluster.sh installs and starts.
#   sudo bash slurm/private-cluster.sh start|stop|purge
#   export SLURM_CONF=$(bash slurm/private-cluster.sh conf)     # point clients at it
# Overrides: FAULTS_CLUSTER_DIR (/var/lib/slurm-faults).
set -euo pipefail
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TPL=$HERE/templates
ROOT=${FAULTS_CLUSTER_DIR:-/var/lib/slurm-faults}
ETC=$ROOT/etc STATE=$ROOT/state RUN=$ROOT/run LOG=$ROOT/log
NODE=fnode CLUSTER=faults DB=slurm_faults_db DBU=faults DBP=faults-only
export SLURM_CONF=$ETC/slurm.conf

pid_alive() { [ -n "${1:-}" ] && [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat")" != Z ]; }
# slurmd's pid file is named per node (SlurmdPidFile=.../slurmd-%n.pid in the template).
pid_of() {
    local file=$RUN/$1.pid
    [ "$1" = slurmd ] && file=$RUN/slurmd-$NODE.pid
    [ -s "$file" ] && cat "$file"
}

# The shared templates describe the two-node test cluster; here they get one node on loopback.
render() {
    sed -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@NODES@|$NODE|g" -e "s|@NODE_HOSTNAMES@|$(hostname -s)|g" \
        -e "s|@NODE_ADDRS@|127.0.0.1|g" -e "s|@CTLD_HOST@|$(hostname -s)|g" -e "s|@CTLD_ADDR@|127.0.0.1|g" \
        -e "s|,CR_LLN||" -e "s|@CPUS@|2|g" -e "s|@REAL_MEMORY_MB@|4000|g" \
        -e "s|@GPUS@|2|g" -e "s|@LAST_GPU@|1|g" -e "s|@STATE_DIR@|$STATE|g" -e "s|@RUN_DIR@|$RUN|g" \
        -e "s|@LOG_DIR@|$LOG|g" -e "s|@DB_NAME@|$DB|g" -e "s|@DB_USER@|$DBU|g" -e "s|@DB_PASS@|$DBP|g" "$1"
}

write_configs() {
    local host
    host=$(hostname -s)
    render "$TPL/slurm.conf.in" | sed -e "s|^SlurmctldHost=.*|SlurmctldHost=$host(127.0.0.1)|" \
        -e "s|^SlurmctldPort=6817|SlurmctldPort=7817|" -e "s|^SlurmdPort=6818|SlurmdPort=7818|" \
        -e "s|^AccountingStoragePort=6819|AccountingStoragePort=7819|" \
        -e "s|^NodeName=$NODE |NodeName=$NODE Port=7818 |" \
        -e "s|^PartitionName=debug .*|PartitionName=debug Nodes=$NODE Default=YES MaxTime=60 State=UP PriorityTier=5|" \
        -e "s|^PartitionName=gpu .*|PartitionName=gpu Nodes=$NODE Default=NO MaxTime=60 State=UP PriorityTier=5|" \
        >"$ETC/slurm.conf"
    cat >>"$ETC/slurm.conf" <<CONF
# ---- private fault cluster (slurm/private-cluster.sh) ----
FirstJobId=900000
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
PartitionName=low Nodes=$NODE Default=NO MaxTime=60 State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=20
PartitionName=high Nodes=$NODE Default=NO MaxTime=60 State=UP PriorityTier=10
CONF
    render "$TPL/gres.conf.in" >"$ETC/gres.conf"
    render "$TPL/slurmdbd.conf.in" | sed -e "s|^DbdPort=6819|DbdPort=7819|" >"$ETC/slurmdbd.conf"
    chmod 600 "$ETC/slurmdbd.conf"
}

start() {
    mkdir -p "$ETC" "$STATE/ctld" "$STATE/d/$NODE" "$STATE/fake-gpu" "$RUN" "$LOG"
    for i in 0 1; do
        [ -e "$STATE/fake-gpu/gpu$i" ] || mknod -m 666 "$STATE/fake-gpu/gpu$i" c 1 3 2>/dev/null ||
            touch "$STATE/fake-gpu/gpu$i"
    done
    write_configs
    mariadb --protocol=socket <<SQL
CREATE DATABASE IF NOT EXISTS $DB;
CREATE USER IF NOT EXISTS '$DBU'@'localhost' IDENTIFIED BY '$DBP';
GRANT ALL ON $DB.* TO '$DBU'@'localhost';
FLUSH PRIVILEGES;
SQL
    pid_alive "$(pid_of slurmdbd || true)" || slurmdbd
    for _ in $(seq 60); do sacctmgr -n -P show cluster >/dev/null 2>&1 && break; sleep 0.5; done
    sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    pid_alive "$(pid_of slurmctld || true)" || slurmctld
    pid_alive "$(pid_of slurmd || true)" || slurmd -N "$NODE"
    for _ in $(seq 60); do
        case "$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1)" in idle|mixed|allocated) sinfo; return 0 ;; esac
        sleep 1
    done
    echo "private-cluster: node $NODE did not become idle; see $LOG" >&2
    return 1
}

stop_one() {
    local pid
    pid=$(pid_of "$1") || return 0
    pid_alive "$pid" || return 0
    kill "$pid"
    for _ in $(seq 75); do pid_alive "$pid" || return 0; sleep 0.2; done
    echo "private-cluster: $1 (pid $pid) did not stop" >&2
    return 1
}

stop() { stop_one slurmd; stop_one slurmctld; stop_one slurmdbd; }
purge() { stop; mariadb --protocol=socket -e "DROP DATABASE IF EXISTS $DB; DROP USER IF EXISTS '$DBU'@'localhost';"; rm -rf "$ROOT"; }
conf() { echo "$SLURM_CONF"; }

case ${1:-} in
    start|stop|purge|conf) "$1" ;;
    *) echo "usage: $0 start|stop|purge|conf" >&2; exit 2 ;;
esac
