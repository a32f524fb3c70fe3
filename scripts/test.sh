#!/usr/bin/env bash
# Installs everything (Node packages, the venv, Debian's Chromium) and runs every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "Debian's chromium is needed for the browser tests: sudo apt-get install -y chromium" >&2; exit 1
  fi
fi
# bubblewrap sandboxes the runtime's workers (one per session); the runtime refuses to serve unsandboxed otherwise.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    echo "Debian's bubblewrap sandboxes the runtime's workers: sudo apt-get install -y bubblewrap" >&2; exit 1
  fi
fi
# iproute2 (ip netns, tc) makes the three hosts of tests/e2e/test_three_hosts.py.
if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
  else
    echo "Debian's iproute2 (ip netns, tc) makes the three-host test's namespaces: sudo apt-get install -y iproute2" >&2; exit 1
  fi
fi
# PostgreSQL: the metadata suite and an end-to-end test run the gateway on a real server (initdb in a temp dir).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "Debian's postgresql is needed for the Postgres metadata tests: sudo apt-get install -y postgresql" >&2; exit 1
  fi
fi
bash scripts/install.sh --test

export PATH="$PWD/.venv/bin:$PATH" KERNELHOP_PYTHON="$PWD/.venv/bin/python"
status=0
echo "== TypeScript unit tests"
npm test --workspaces --if-present || status=1
echo "== Python tests (unit and end to end on loopback)"
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 || status=1
echo "== Browser tests (JupyterLab in Debian's Chromium)"
npm run test:ui -w ui-tests --if-present || status=1
exit $status
