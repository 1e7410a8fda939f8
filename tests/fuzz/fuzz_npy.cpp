// libFuzzer target: the .npy parser must reject or accept any bytes without crashing, and an
// accepted array's elements must all be readable.
#include "ssm/io/npy.hpp"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const ssm::io::NpyArray a = ssm::io::parse_npy(data, size);
    if (a.is_complex()) {
      (void)a.values<std::complex<double>>();
    } else {
      (void)a.values<double>();
    }
    if (a.shape.size() <= 2) (void)a.matrix<std::complex<float>>();
  } catch (const ssm::error&) {
  }
  return 0;
}
