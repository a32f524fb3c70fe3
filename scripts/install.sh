#!/usr/bin/env bash
# Installs everything kernelhop needs into this checkout: Node packages (built), a Python venv with the kernelhop
# package (editable, with the prebuilt JupyterLab extension and what the example notebook imports, on the kernel and
# the local runtime's workers alike), and with --test the test and benchmark extras.
#   --venv DIR     make the venv there instead of .venv
#   --skip-node    leave the Node packages as they are (npm ci && npm run build already ran in this checkout)
set -euo pipefail
cd "$(dirname "$0")/.."

extras="lab,example"
venv=".venv"
node=1
while [ $# -gt 0 ]; do
  case "$1" in
    --test) extras="lab,example,test,bench" ;;
    --venv) [ $# -ge 2 ] || { echo "scripts/install.sh: --venv needs a directory" >&2; exit 2; }; venv="$2"; shift ;;
    --skip-node) node=0 ;;
    *) echo "usage: scripts/install.sh [--test] [--venv DIR] [--skip-node]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$node" = 1 ]; then
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  npm ci --no-audit --no-fund
  npm run build
fi

python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# torch 2.13.0 (CPU) lies on this machine class's disk; any other spec would download gigabytes.
if [ "$extras" != "lab,example" ]; then "$venv/bin/python" -m pip install --quiet torch==2.13.0; fi
"$venv/bin/python" -m pip install --quiet -e ".[$extras]"
echo "kernelhop installed: run $venv/bin/kernelhop up"
