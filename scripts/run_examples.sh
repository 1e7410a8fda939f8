#!/usr/bin/env bash
# Runs every example program (after `cmake --build --preset release`). --small: short sizes for CI.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/release/examples
small=0; [[ "${1:-}" == "--small" ]] && small=1
run() { echo "--- $*"; "$@"; }
out=build/release/example_output
mkdir -p "$out"
if ((small)); then
  run "$bin/hippo_memory" 64 1000 "$out/hippo_memory.svg"
  run "$bin/convolution_demo" 4096 2
else
  run "$bin/hippo_memory" 64 4000 "$out/hippo_memory.svg"
  run "$bin/convolution_demo"
fi
