// libFuzzer target: restore_state (ssm/io/state_io.hpp) must accept or refuse any bytes without crashing,
// and leave the state untouched when it refuses. The first byte picks how the input is used:
//   even: a patch of a valid saved state (its bytes XOR the input, cut to a length the input chooses),
//         with the hash rewritten so the parser behind the hash check is exercised;
//   odd:  the rest of the input as the saved bytes, as they come.
#include "ssm/io/state_io.hpp"
#include "ssm/layers/mamba2.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <random>
#include <string>

namespace {

const ssm::Mamba2<float>& layer() {
  static const ssm::Mamba2<float> m = [] {
    std::mt19937_64 gen(1);
    ssm::Mamba2Config c;
    c.d_model = 8;
    c.d_state = 4;
    c.headdim = 4;
    return ssm::Mamba2<float>::initialise(c, gen);
  }();
  return m;
}

const std::string& valid_bytes() {
  static const std::string bytes = [] {
    auto s = layer().initial_state();
    layer().forward(ssm::MatrixX<float>::Ones(3, 8), s);
    return ssm::io::save_state(s);
  }();
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string bytes;
  if (data[0] & 1) {
    bytes.assign(reinterpret_cast<const char*>(data + 1), size - 1);
  } else {
    bytes = valid_bytes();
    const std::size_t length = size >= 3 ? (std::size_t(data[1]) << 8 | data[2]) % (bytes.size() + 64) : bytes.size();
    bytes.resize(std::max<std::size_t>(length, 16), '\0');  // room for a hash and a patched byte
    for (std::size_t i = 3; i < size; ++i) bytes[(i - 3) % (bytes.size() - 8)] ^= char(data[i]);
    const std::uint64_t hash = ssm::io::detail::fnv1a(bytes.data(), bytes.size() - 8);
    std::memcpy(&bytes[bytes.size() - 8], &hash, 8);
  }
  auto state = layer().initial_state();
  const auto before = state.ssm;
  try {
    ssm::io::restore_state(bytes, state);
  } catch (const ssm::error&) {
    if (state.ssm != before) __builtin_trap();  // a refusal must leave the state alone
  }
  return 0;
}
