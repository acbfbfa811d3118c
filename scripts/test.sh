#!/usr/bin/env bash
# Set up, start the real services the tests use, and run the whole test suite.
#   - the single-node Slurm test cluster (needs root; skipped with a message otherwise)
#   - MLflow servers and Ray are started by the tests themselves, on 127.0.0.1
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slurm"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

if [ "$(id -u)" = 0 ] && [ "${IDHHPC_SKIP_SLURM:-0}" != 1 ]; then
  bash slurm/start-test-cluster.sh || { echo "Slurm test cluster failed to start" >&2; exit 1; }
else
  echo "not root or IDHHPC_SKIP_SLURM=1: Slurm-marked tests will be skipped"
fi

set +e
python -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
