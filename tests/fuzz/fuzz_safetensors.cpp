// libFuzzer target: the safetensors parser must reject or accept any bytes without crashing, and
// every tensor of an accepted file must be readable in full.
#include "ssm/io/safetensors.hpp"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto file = ssm::io::SafetensorsFile::parse(std::vector<unsigned char>(data, data + size), "fuzz");
    for (const auto& name : file.names()) {
      if (ssm::io::is_integer_dtype(file.info(name).dtype)) {
        (void)file.integers(name);
      } else {
        (void)file.values<float>(name);
        (void)file.matrix<double>(name);
      }
    }
  } catch (const ssm::error&) {
  }
  return 0;
}
