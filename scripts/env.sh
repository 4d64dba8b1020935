#!/usr/bin/env bash
# Create (once) and update the visreps virtual environment, then print its bin folder.
# The environment lives outside the checkout (several GB of torch/CUDA wheels), in
# ${VISREPS_VENV:-$HOME/.cache/visreps/venv-py<version>}; dependencies are reinstalled only when
# pyproject.toml's dependency lists change, the package itself is re-linked to this checkout every time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="${VISREPS_PYTHON:-python3}"
"$python_bin" -c 'import sys; assert sys.version_info >= (3, 11), "visreps needs Python 3.11+"' \
  || { echo "visreps needs Python >= 3.11 (set VISREPS_PYTHON to one)" >&2; exit 1; }
version="$("$python_bin" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
venv="${VISREPS_VENV:-$HOME/.cache/visreps/venv-py$version}"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment $venv" >&2
  mkdir -p "$(dirname "$venv")"
  "$python_bin" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
fi
stamp="$venv/.visreps-deps"
wanted="$("$venv/bin/python" - "$here/pyproject.toml" <<'PY'
import hashlib, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
text = repr((project["dependencies"], project.get("optional-dependencies", {})))
print(hashlib.sha256(text.encode()).hexdigest())
PY
)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "installing visreps and its dependencies into $venv (first time: several GB, minutes)" >&2
  "$venv/bin/python" -m pip install -q -e "$here[dev]" >&2
  echo "$wanted" > "$stamp"
else
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$here" >&2 2>/dev/null \
    || "$venv/bin/python" -m pip install -q --no-deps -e "$here" >&2
fi
echo "$venv/bin"
