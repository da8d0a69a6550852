#!/usr/bin/env bash
# Sets up (scripts/bootstrap.sh), starts the services the tests use, checks
# that the generated stubs match proto/, and runs the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

# Postgres on 127.0.0.1:5432 when the machine has one; otherwise the tests
# start an embedded Postgres themselves.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "test: starting the machine's Postgres"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi

.venv/bin/python scripts/gen_protos.py --check
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || status=$?

# The dashboard's end-to-end tests keep a screenshot of each view here
# (gitignored; emptied when those tests start).
if compgen -G "test-artifacts/dashboard/*.png" >/dev/null; then
  echo "test: dashboard screenshots in $PWD/test-artifacts/dashboard/"
fi
exit "$status"
