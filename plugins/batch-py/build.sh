#!/bin/sh
# Builds batch.wasm, a WebAssembly component, from app.py with componentize-py
# (pip install componentize-py), against berth's `framework` world.
# Usage: ./build.sh [OUTPUT.wasm]   (default: batch.wasm here)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/batch.wasm}
wit=${BERTH_WIT:-$here/../../proto/wit}
cd "$here"
componentize-py -d "$wit" -w framework componentize app -o "$out" >/dev/null
echo "built $out"
