#!/usr/bin/env bash
# The README's first command: install what is missing, build everything (release preset), and
# run the flagship example.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
cmake --preset release
cmake --build --preset release
echo
echo "=== flagship example: HiPPO-LegS online memory (build/release/examples/hippo_memory) ==="
./build/release/examples/hippo_memory 64 4000 build/release/hippo_memory.svg
