#!/usr/bin/env bash
# Sets up a fresh machine for Koverage: Debian packages, then a virtual
# environment in .venv with the project and its dev tools. Safe to re-run;
# it skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: PDF checks (poppler-utils), WeasyPrint's font subsetting
# (libharfbuzz-subset0) and Debian's Chromium for the dashboard's browser tests.
debs=(poppler-utils libharfbuzz-subset0 chromium)
missing=()
for pkg in "${debs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The virtual environment, reinstalled only when pyproject.toml, setup.py or
# the worker's C decoder change (the install compiles it in place).
python=${KOVERAGE_PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
stamp=.venv/.koverage-installed
wanted=$(cat pyproject.toml setup.py services/worker/_span_wire.c | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev,deploy,deploy-test]"
  echo "$wanted" > "$stamp"
fi
echo "bootstrap: ready (.venv/bin/koverage)"
