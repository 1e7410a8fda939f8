#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer + UBSan) and runs each for a while,
# seeded with the golden files. Usage: scripts/fuzz.sh [seconds per target, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
SSM_WITH_FUZZ=1 ./scripts/install_deps.sh
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz

corpus_root="build/fuzz/corpus"
rm -rf "$corpus_root"
mkdir -p "$corpus_root"/{npy,safetensors,config,state}
find tests/data -name '*.npy' -size -64k -exec cp {} "$corpus_root/npy/" \; 2>/dev/null || true
# Distinct names for the seeds (many cases have an A.npy).
i=0; for f in $(find tests/data -name '*.npy' -size -64k); do cp "$f" "$corpus_root/npy/seed_$i.npy"; i=$((i+1)); done
cp tests/data/mamba_lm/model.safetensors "$corpus_root/safetensors/"
cp tests/data/s4block_dplr_legs/model.safetensors "$corpus_root/safetensors/s4block.safetensors"  # holds an I64
cp tests/data/mamba_lm/config.json "$corpus_root/config/"
cp tests/data/mamba2_lm/config.json "$corpus_root/config/mamba2_config.json"
cp tests/data/s4block_nplr_s4yaml/config.json "$corpus_root/config/s4block_config.json"
# The Hugging Face layouts and a shard index (fuzz_config reads every input as each of them).
echo '{"model_type": "falcon_mamba", "hidden_size": 32, "num_hidden_layers": 2, "vocab_size": 64, "state_size": 4, "expand": 2, "intermediate_size": 64, "time_step_rank": "auto", "mixer_rms_eps": 1e-6, "tie_word_embeddings": true}' \
  > "$corpus_root/config/hf_falcon_mamba_config.json"
echo '{"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 112, "state_size": 16, "expand": 2, "head_dim": 16, "num_heads": 8, "n_groups": 2, "time_step_limit": [0.0, Infinity]}' \
  > "$corpus_root/config/hf_mamba2_config.json"
echo '{"metadata": {"total_size": 64}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}' \
  > "$corpus_root/config/model.safetensors.index.json"

export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=0"
for target in build/fuzz/tests/fuzz/fuzz_*; do
  [[ -x "$target" ]] || continue
  name="$(basename "$target")"
  kind="${name#fuzz_}"
  dir="$corpus_root/$kind"
  mkdir -p "$dir"
  echo "=== $name for ${seconds}s"
  # -rss_limit_mb guards against allocations sized by an unchecked field.
  "$target" "$dir" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=200000 -print_final_stats=1 2>&1 | tail -n 12
done
echo "fuzz: all targets ran without a crash"
