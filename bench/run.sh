#!/usr/bin/env bash
# Runs every benchmark executable and writes bench/RESULTS.md: the machine line, each performance
# target with its figure, the reference it is measured against, and whether it is met.
# Usage: bench/run.sh [--quick]   (--quick: shorter runs and one repetition, for a smoke run)
# Each benchmark runs three times, interleaved in random order, and the report keeps the fastest
# repetition of each: the machines are shared, and a slow repetition measures the neighbours.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d build/release ]] || { cmake --preset release; }
cmake --build --preset release
out=build/release/bench-results
mkdir -p "$out"
min_time=0.2; repetitions=3
[[ "${1:-}" == "--quick" ]] && { min_time=0.05; repetitions=1; }
for exe in build/release/bench/bench_*; do
  [[ -x "$exe" ]] || continue
  name="$(basename "$exe")"
  echo "=== $name"
  "$exe" --benchmark_min_time="$min_time" --benchmark_repetitions="$repetitions" \
    --benchmark_enable_random_interleaving=true --benchmark_out="$out/$name.json" --benchmark_out_format=json \
    --benchmark_counters_tabular=true
done
python3 bench/report.py "$out" > bench/RESULTS.md
echo "wrote bench/RESULTS.md"
cat bench/RESULTS.md
