// libFuzzer target: the JSON readers of a checkpoint directory (the Mamba-1 / Mamba-2 language model's
// config.json in every layout, the S4 block's config.json, and a sharded checkpoint's
// model.safetensors.index.json) must reject or accept any text without crashing; an accepted config must
// have sizes that are all >= 1 and that divide as the layer needs, and an accepted index only plain file
// names.
#include "ssm/io/checkpoint.hpp"
#include "ssm/layers/s4_block.hpp"
#include "ssm/models/mamba_lm.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto config = ssm::MambaLMConfig::parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    if (config.d_model < 1 || config.n_layer < 1 || config.vocab_size < 1 || config.padded_vocab_size() < config.vocab_size)
      std::abort();  // accepted an invalid config
    if (config.mixer == ssm::MambaMixer::mamba1) {
      const ssm::MambaConfig& b = config.block;
      if (b.d_state < 1 || b.d_conv < 1 || b.d_inner() < 1) std::abort();
    } else {
      const ssm::Mamba2Config& b = config.block2;
      if (b.d_state < 1 || b.d_conv < 1 || b.headdim < 1 || b.ngroups < 1 || b.nheads() < 1 ||
          b.nheads() % b.ngroups != 0 || b.ssm_channels() % b.headdim != 0 || b.ssm_channels() > b.d_inner())
        std::abort();
    }
  } catch (const ssm::error&) {
  }
  try {
    for (const auto& [tensor, shard] : ssm::io::Checkpoint::parse_index(std::string(reinterpret_cast<const char*>(data), size), "fuzz"))
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "..") std::abort();  // would leave the directory
  } catch (const ssm::error&) {
  }
  try {
    const auto config = ssm::S4BlockConfig::parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    if (config.d_model < 1 || config.d_state < 1 || config.channels < 1 || config.kernel_rows() < 1) std::abort();
  } catch (const ssm::error&) {
  }
  return 0;
}
