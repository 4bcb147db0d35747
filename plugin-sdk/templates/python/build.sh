#!/bin/sh
# Builds {{name}}.wasm from app.py with componentize-py (pip install componentize-py), against the
# berth:plugin WIT files in ./wit ({{world}} world).
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w {{world}} componentize app -o {{name}}.wasm >/dev/null
echo "built {{name}}.wasm"
