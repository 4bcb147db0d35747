#!/bin/sh
# Builds the sleeping C allocator: wit-bindgen c, zig cc for wasm32-wasi (nanosleep imports WASI preview 1's
# poll_oneoff), then wasm-tools component new with the preview-1 adapter, which maps it onto WASI 0.2's clocks
# and poll. Usage: ./build.sh OUTPUT.wasm ADAPTER.wasm
set -eu
here=$(cd "$(dirname "$0")" && pwd)
gen=$(mktemp -d)
wit-bindgen c "$here/../../../proto/wit" --world allocator --out-dir "$gen" >/dev/null
python3 -m ziglang cc --target=wasm32-wasi -mexec-model=reactor -O2 -s -Wall -Werror -I "$gen" -o "$gen/core.wasm" \
  "$here/sleep.c" "$gen/allocator.c" "$gen/allocator_component_type.o"
wasm-tools component new "$gen/core.wasm" --adapt "wasi_snapshot_preview1=$2" -o "$1"
rm -rf "$gen"
