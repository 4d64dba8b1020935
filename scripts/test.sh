#!/usr/bin/env bash
# Install visreps with its test dependencies (if needed) and run the test suite on every core
# (pytest-xdist, one test file per worker; VISREPS_TEST_WORKERS=0 runs it in this process alone).
# Extra arguments are passed to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$(bash "$here/scripts/env.sh")"
cd "$here"
export MLFLOW_DISABLE_TELEMETRY=true
exec "$bin/python" -m pytest -n "${VISREPS_TEST_WORKERS:-auto}" --dist loadfile "$@"
