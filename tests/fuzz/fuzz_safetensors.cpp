// libFuzzer target: the safetensors reader must reject or accept any bytes without crashing, and every
// tensor of an accepted file must be readable in full, both from bytes in memory and from the same bytes
// memory-mapped from a file (the path every loader takes).
#include "ssm/io/safetensors.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <unistd.h>

namespace {

void read_every_tensor(const ssm::io::SafetensorsFile& file) {
  for (const auto& name : file.names()) {
    const auto dtype = file.info(name).dtype;
    if (ssm::io::is_integer_dtype(dtype)) {
      (void)file.integers(name);
    } else if (ssm::io::is_readable_float_dtype(dtype)) {
      (void)file.values<float>(name);
      (void)file.matrix<double>(name);
      if (dtype == ssm::io::TensorDtype::F32) {
        try {
          const auto view = file.view<float>(name);
          volatile float sum = view.size() ? view(view.rows() - 1, view.cols() - 1) : 0.0f;  // the last element is in bounds
          (void)sum;
        } catch (const ssm::error&) {  // misaligned: refused, not read
        }
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    read_every_tensor(ssm::io::SafetensorsFile::parse(std::vector<unsigned char>(data, data + size), "fuzz"));
  } catch (const ssm::error&) {
  }
  static const std::string path = "/tmp/fuzz_safetensors_" + std::to_string(::getpid()) + ".safetensors";
  if (std::FILE* out = std::fopen(path.c_str(), "wb")) {
    const bool written = std::fwrite(data, 1, size, out) == size;
    std::fclose(out);
    if (written) {
      try {
        read_every_tensor(ssm::io::SafetensorsFile::read(path));
      } catch (const ssm::error&) {
      }
    }
  }
  return 0;
}
