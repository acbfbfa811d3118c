#!/usr/bin/env bash
# Stop the single-node Slurm test cluster started by slurm/start-test-cluster.sh:
# slurmd, slurmctld, slurmdbd, MariaDB, munged, in that order (clients before servers).
# Job, node and accounting state stay on disk, so the next start recovers them.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=slurm/common.sh
source "$HERE/common.sh"

status=0
stop_daemon slurmd "$RUN_DIR/slurmd.pid" || status=1
stop_daemon slurmctld "$RUN_DIR/slurmctld.pid" || status=1
stop_daemon slurmdbd "$RUN_DIR/slurmdbd.pid" || status=1
stop_daemon mariadbd /run/mysqld/mysqld.pid || status=1
stop_daemon munged /run/munge/munged.pid || status=1
[ "$status" = 0 ] && log "stopped"
exit "$status"
