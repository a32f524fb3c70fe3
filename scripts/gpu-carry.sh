#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU host that has Python and PyTorch but no Node.js, no Jupyter and no
# network: this machine's node binary, the gateway's and runtime's production node_modules, and Python 3.12 wheels of
# the packages kernelhop adds to a PyTorch image. Output: .gpu-carry/ (git-ignored), carried with the built dist/ folders.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu-carry
mkdir -p "$out"
[ -f "$out/node.xz" ] || xz -T2 -6 -c "$(command -v node)" > "$out/node.xz"

if [ ! -f "$out/node_modules.tar.xz" ]; then
  tmp=$(mktemp -d)
  version() { node -p "require('./node_modules/$1/package.json').version"; }
  echo '{"name":"gpu-carry","version":"1.0.0","private":true}' > "$tmp/package.json"
  (cd "$tmp" && npm install --no-audit --no-fund --omit=dev "@grpc/grpc-js@$(cd "$OLDPWD" && version @grpc/grpc-js)" \
    "@grpc/proto-loader@$(cd "$OLDPWD" && version @grpc/proto-loader)" "ws@$(cd "$OLDPWD" && version ws)" \
    "better-sqlite3@$(cd "$OLDPWD" && version better-sqlite3)" "bufferutil@$(cd "$OLDPWD" && version bufferutil)" "fzstd@$(cd "$OLDPWD" && version fzstd)" \
    "@napi-rs/blake-hash@$(cd "$OLDPWD" && version @napi-rs/blake-hash)" "lru-cache@$(cd "$OLDPWD" && version lru-cache)" \
    blake3-wasm@2.1.5 >/dev/null)
  # Only the compiled addon of better-sqlite3 is needed at run time, not SQLite's sources or object files.
  (cd "$tmp/node_modules/better-sqlite3" && rm -rf deps src build/Release/obj* build/Release/.deps build/deps)
  tar -C "$tmp" -cJf "$out/node_modules.tar.xz" node_modules
  rm -rf "$tmp"
fi

mkdir -p "$out/wheels"
for spec in blake3 xxhash fastcdc click click-default-group codetiming humanize py-cpuinfo zstandard websockets \
    ipython traitlets jedi parso pygments prompt_toolkit wcwidth decorator matplotlib-inline stack_data executing \
    asttokens pure_eval pexpect ptyprocess ipython_pygments_lexers cryptography cffi pycparser; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
    -d "$out/wheels" "$spec" 2>&1 | grep -v '^WARNING' || true
done
du -sh "$out"
