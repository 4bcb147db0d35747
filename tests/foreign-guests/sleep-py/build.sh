#!/bin/sh
# Builds the sleeping Python allocator with componentize-py. Usage: ./build.sh OUTPUT.wasm
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
componentize-py -d "$here/../../../proto/wit" -w allocator componentize app -o "$1" >/dev/null
