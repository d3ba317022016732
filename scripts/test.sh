#!/usr/bin/env bash
# Set up (or refresh) the environment, lint (ruff, settings in pyproject.toml), then run the whole
# test suite on the CPU. Arguments go to pytest, e.g. `bash scripts/test.sh -m "not bundle and not slow"`
# for the fast tier.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
VENV="${MEDSAM_FT_VENV:-$ROOT/.venv}"
cd "$ROOT"
"$VENV/bin/python" -m ruff check .
exec "$VENV/bin/python" -m pytest "$@"
