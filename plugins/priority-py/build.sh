#!/bin/sh
# Builds priority.wasm, a WebAssembly component, from app.py with componentize-py
# (pip install componentize-py), against berth's `allocator` world.
# Usage: ./build.sh [OUTPUT.wasm]   (default: priority.wasm here)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/priority.wasm}
wit=${BERTH_WIT:-$here/../../proto/wit}
cd "$here"
componentize-py -d "$wit" -w allocator componentize app -o "$out" >/dev/null
echo "built $out"
