#!/usr/bin/env bash
# Runs every example program (after `cmake --build --preset release`). --small: short sizes for CI.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/release/examples
small=0; [[ "${1:-}" == "--small" ]] && small=1
run() { echo "--- $*"; "$@"; }
if ((small)); then
  run "$bin/convolution_demo" 4096 2
else
  run "$bin/convolution_demo"
fi
