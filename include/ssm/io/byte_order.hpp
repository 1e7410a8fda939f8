#pragma once
/// \file byte_order.hpp
/// What the file formats of ssm/io assume of the machine: IEEE float and double, and a little-endian
/// byte order (the order .npy, safetensors and saved states are read and written in).

#include <cstdint>
#include <cstring>

namespace ssm::io::detail {

static_assert(sizeof(float) == 4 && sizeof(double) == 8, "ssm::io: IEEE float and double are required");

/// Whether this machine stores the low byte of an integer first.
inline bool host_is_little_endian() {
  const std::uint16_t probe = 1;
  unsigned char first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

}  // namespace ssm::io::detail
