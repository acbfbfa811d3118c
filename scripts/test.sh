#!/usr/bin/env bash
# Set up, start the real services the tests use, and run the whole test suite.
#   - the single-node Slurm test cluster (needs root; skipped with a message otherwise)
#   - MLflow servers and Ray are started by the tests themselves, on 127.0.0.1
#   - Debian's chromium for the MLflow UI tests (installed with apt-get when missing and root)
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

# The MLflow UI tests drive the distribution's headless Chromium; their screenshots land in
# test-artifacts/mlflow-ui/ (keep that folder as the CI run's artifacts).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
    >/dev/null || echo "chromium could not be installed: the MLflow UI tests will be skipped" >&2
fi
mkdir -p test-artifacts

set +e
python -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
