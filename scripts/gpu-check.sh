#!/usr/bin/env bash
# All GPU checks in one call, on a GPU host that has Python and PyTorch but may lack Node.js, Jupyter and a network.
#
# Here (with Node.js and the project installed):   bash scripts/gpu-carry.sh && npm run build
# Then carry .gpu-carry kernel-snapshot/dist gateway/dist runtime/dist to the GPU host and run there:
#     bash scripts/gpu-check.sh [--size-mib 2048]
# It unpacks the carried node binary and production node_modules, unpacks the carried Python 3.12 wheels into a
# private folder (no pip, no network, nothing system-wide), then runs scripts/gpu_check.py: a real gateway and runtime on
# this host, 2 GiB of CUDA tensors and a model hopped through them, restore time onto the GPU, equality and devices.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${TMPDIR:-/tmp}/kernelhop-gpu-check"
mkdir -p "$work/bin"

if ! command -v node >/dev/null 2>&1; then
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    .gpu-carry/node.xz "$work/bin/node"
  chmod +x "$work/bin/node"
  export PATH="$work/bin:$PATH"
fi
if [ ! -d node_modules/@grpc/grpc-js ]; then
  python3 -c 'import tarfile, sys; tarfile.open(sys.argv[1]).extractall(".")' .gpu-carry/node_modules.tar.xz
  mkdir -p node_modules/@kernelhop
  ln -sfn ../../kernel-snapshot node_modules/@kernelhop/kernel-snapshot
fi
if [ -d .gpu-carry/wheels ]; then
  # Wheels are zip files laid out for site-packages: unpacking them needs no pip, which such an image may lack.
  python3 -c 'import glob, sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sorted(glob.glob(".gpu-carry/wheels/*.whl"))]' "$work/site"
fi
export PYTHONPATH="$work/site:$PWD:$PWD/kernel-snapshot/python:$PWD/runtime/python:$PWD/tests/support${PYTHONPATH:+:$PYTHONPATH}"
export KERNELHOP_PYTHON=python3 KERNELHOP_HOME="$work/home" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 scripts/gpu_check.py "$@"
