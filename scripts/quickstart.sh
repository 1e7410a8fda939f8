#!/usr/bin/env bash
# The README's first command: install what is missing, build everything (release preset), and
# run the flagship example.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
cmake --preset release
cmake --build --preset release
echo
echo "=== flagship example: build/release/examples/hippo_memory ==="
if [[ -x build/release/examples/hippo_memory ]]; then
  ./build/release/examples/hippo_memory
else
  ./build/release/examples/convolution_demo
fi
