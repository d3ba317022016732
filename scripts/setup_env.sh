#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv, or $MEDSAM_FT_VENV) and install
# medsam-ft with its test extra. Safe to run again: it only installs what is missing or changed.
# Sourced by the other scripts; prints the venv's python on the last line when run directly.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MEDSAM_FT_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# The tested torch/torchvision pair; on these machines pip serves it from local disk.
# Override with MEDSAM_FT_TORCH="torch==X torchvision==Y" (or "" to let pip choose).
case "$(uname -m)" in
    x86_64) DEFAULT_TORCH="torch==2.14.1 torchvision==0.29.1" ;;
    *) DEFAULT_TORCH="torch==2.9.1 torchvision==0.24.1" ;;
esac
TORCH_SPEC="${MEDSAM_FT_TORCH-$DEFAULT_TORCH}"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
if [ -n "$TORCH_SPEC" ]; then
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check $TORCH_SPEC
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[test]"
echo "[setup] ready: $VENV/bin/python"
