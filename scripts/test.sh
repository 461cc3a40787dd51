#!/usr/bin/env bash
# The test command (README): installs everything the tests need, then runs ruff, import-linter and the
# whole pytest suite. Database tests run against SQLite and against PostgreSQL on 127.0.0.1:5432 (a fresh
# database per run, dropped afterwards); Mosquitto and InfluxDB are started privately by the tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/core -k token`.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

echo "== system packages"
scripts/install-system-packages.sh

echo "== PostgreSQL"
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && [ -z "${LABSHARE_TEST_PG_ADMIN_URL:-}" ]; then
    # python-svc machines start it before a session; start it if it is down (same command they use)
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    fi
    pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not running on 127.0.0.1:5432" >&2; exit 1; }
fi

echo "== Python environment (.venv)"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

echo "== ruff"
.venv/bin/ruff check .
echo "== import-linter"
.venv/bin/lint-imports

echo "== pytest"
status=0
.venv/bin/python -m pytest "$@" || status=$?
echo "test command finished in $(( $(date +%s) - started )) s (exit $status)"
exit $status
