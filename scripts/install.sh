#!/usr/bin/env bash
# Installs everything kernelhop needs into this checkout: Node packages (built), a Python venv with the kernelhop
# package (editable, with the prebuilt JupyterLab extension), and with --test the test and benchmark extras.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="lab"
for arg in "$@"; do
  case "$arg" in
    --test) extras="lab,test,bench" ;;
    *) echo "usage: scripts/install.sh [--test]" >&2; exit 2 ;;
  esac
done

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm ci --no-audit --no-fund
npm run build

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch 2.13.0 (CPU) lies on this machine class's disk; any other spec would download gigabytes.
if [ "$extras" != "lab" ]; then .venv/bin/python -m pip install --quiet torch==2.13.0; fi
.venv/bin/python -m pip install --quiet -e ".[$extras]"
echo "kernelhop installed: run .venv/bin/kernelhop up"
