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
  run "$bin/s4_kernels" 32 2048 "$out/s4_kernels.svg"
  run "$bin/streaming" 16 16 2048
  run "$bin/mamba_generate" --new 8
  run "$bin/mamba_generate" --model tests/data/mamba2_lm --new 8
  run "$bin/mamba_generate" --new 8 --temperature 0.8 --top-k 20 --top-p 0.9 --seed 7
  run "$bin/mamba_batch" --streams 4 --new 8
  run "$bin/mamba_batch" --model tests/data/mamba2_lm --streams 4 --new 8
  run "$bin/s4_classifier"
else
  run "$bin/hippo_memory" 64 4000 "$out/hippo_memory.svg"
  run "$bin/convolution_demo"
  run "$bin/s4_kernels" 64 16384 "$out/s4_kernels.svg"
  run "$bin/streaming" 64 64 16384
  run "$bin/mamba_generate"
  run "$bin/mamba_generate" --model tests/data/mamba2_lm
  run "$bin/mamba_batch"
  run "$bin/mamba_batch" --model tests/data/mamba2_lm
  run "$bin/s4_classifier"
fi
