#!/usr/bin/env bash
# Stop the Slurm test cluster started by slurm/start-test-cluster.sh: each node's slurmd,
# slurmctld, slurmdbd, MariaDB, munged, in that order (clients before servers), then remove the
# nodes' network namespaces, their veth pairs and the bridge. Job, node and accounting state
# stay on disk (and the network's address in $STATE_DIR/net-prefix), so the next start
# recovers them.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=slurm/common.sh
source "$HERE/common.sh"

status=0
for node in "${NODES[@]}"; do stop_daemon slurmd "$RUN_DIR/slurmd-$node.pid" || status=1; done
stop_daemon slurmd "$RUN_DIR/slurmd.pid" || status=1   # a single-node cluster from before
stop_daemon slurmctld "$RUN_DIR/slurmctld.pid" || status=1
stop_daemon slurmdbd "$RUN_DIR/slurmdbd.pid" || status=1
stop_daemon mariadbd /run/mysqld/mysqld.pid || status=1
stop_daemon munged /run/munge/munged.pid || status=1
remove_network
[ "$status" = 0 ] && log "stopped"
exit "$status"
