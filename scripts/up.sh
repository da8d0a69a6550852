#!/usr/bin/env bash
# Sets up (scripts/bootstrap.sh) and runs the whole mesh on embedded defaults,
# streaming one demo answer once it is up. Ctrl-C stops everything.
# Extra arguments go to `koverage up`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/koverage up --demo "$@"
