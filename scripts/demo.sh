#!/usr/bin/env bash
# The demo command (README): installs LabShare into .venv and runs `labshare demo` — a SQLite database
# with migrations and demo data in ./labshare-demo, and the web app on http://127.0.0.1:5000.
# Extra arguments go to `labshare demo`, e.g. `scripts/demo.sh --port 8000`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/labshare demo "$@"
