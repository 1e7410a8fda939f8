// libFuzzer target: the Mamba checkpoint's config.json reader must reject or accept any text
// without crashing, and an accepted config must have sizes that are all >= 1.
#include "ssm/models/mamba_lm.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto config = ssm::MambaLMConfig::parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    if (config.d_model < 1 || config.n_layer < 1 || config.vocab_size < 1 || config.block.d_state < 1 ||
        config.block.d_conv < 1 || config.block.d_inner() < 1 || config.padded_vocab_size() < config.vocab_size)
      std::abort();  // accepted an invalid config
  } catch (const ssm::error&) {
  }
  return 0;
}
