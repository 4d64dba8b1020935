#!/usr/bin/env bash
# Install visreps (if needed) and run the whole pipeline on the built-in demo dataset.
# Extra arguments are passed to `visreps pipeline` (e.g. key=value overrides).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$(bash "$here/scripts/env.sh")"
cd "$here"
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
exec "$bin/visreps" pipeline "$@"
