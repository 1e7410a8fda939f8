#pragma once
/// \file checkpoint_support.hpp
/// Helpers for the tests that load checkpoint directories (model.safetensors + config.json): a
/// temporary directory removed at the end of the test, reading a checkpoint's tensors as F32 for
/// rewriting with changes, writing a directory back, and an assertion that a call throws an
/// ssm::error whose message names every given fragment.

#include <gtest/gtest.h>

#include "ssm/core/error.hpp"
#include "ssm/io/safetensors.hpp"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <unistd.h>
#include <vector>

namespace ssm::test {

/// The whole text of a file.
inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// A fresh directory <temp>/<prefix>_<pid>_<n>, removed with everything in it at destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "ssm_test") {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

/// The bytes of a safetensors file written by hand: the 8-byte little-endian length of `header`, the
/// header (JSON text, taken as it is), then `data`.
inline std::vector<unsigned char> raw_safetensors(const std::string& header, const std::vector<unsigned char>& data) {
  std::vector<unsigned char> out(8 + header.size() + data.size());
  for (int i = 0; i < 8; ++i) out[std::size_t(i)] = static_cast<unsigned char>((std::uint64_t(header.size()) >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
  return out;
}

/// Every tensor of a safetensors file, in file order, as F32 values with their shapes.
inline std::vector<io::TensorToWrite> read_tensors(const std::string& safetensors_path) {
  const auto file = io::SafetensorsFile::read(safetensors_path);
  std::vector<io::TensorToWrite> out;
  for (const auto& name : file.names()) out.push_back({name, file.info(name).shape, file.values<float>(name)});
  return out;
}

/// Writes dir/model.safetensors from `tensors` and dir/config.json from `config` (its text).
inline void write_checkpoint(const std::string& dir, const std::vector<io::TensorToWrite>& tensors,
                             const std::string& config) {
  io::write_safetensors(dir + "/model.safetensors", tensors);
  std::ofstream(dir + "/config.json") << config;
}

/// Expects f() to throw ssm::error with every one of `fragments` in its message.
template <class F>
void expect_error(F&& f, const std::vector<std::string>& fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const ssm::error& e) {
    const std::string msg = e.what();
    for (const auto& frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << msg << " lacks " << frag;
  }
}

}  // namespace ssm::test
