#pragma once
/// \file safetensors.hpp
/// Reading safetensors files (the weight format of Hugging Face and PyTorch exports).
///
/// Layout: an 8-byte little-endian header length n, n bytes of JSON
///   {"name": {"dtype": "F32", "shape": [r, c], "data_offsets": [begin, end]}, ..., "__metadata__": {...}}
/// then the data; offsets are relative to the first byte after the header. Tensors are stored
/// in PyTorch's row-major (C) order; `matrix()` honours that, so a (r, c) weight becomes the same
/// r x c Eigen matrix. Every length, offset and shape is checked against the bytes really present
/// before it is used: a truncated or corrupt file is an `ssm::error`, never a crash or an
/// allocation sized by an unchecked field.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ssm::io {

/// Element types the reader converts from: floating point (read with `values<T>` / `matrix<T>`) and, for
/// buffers such as a step counter or S4's `l_kernel`, signed integers (read with `integers`). Other dtypes
/// (I8, U8, BOOL, ...) are refused when the header is parsed.
enum class TensorDtype { F16, BF16, F32, F64, I32, I64 };

/// True for the integer dtypes (I32, I64).
inline bool is_integer_dtype(TensorDtype d) { return d == TensorDtype::I32 || d == TensorDtype::I64; }

/// The dtype's name as the format writes it ("F32", "I64", ...).
inline const char* dtype_name(TensorDtype d) {
  switch (d) {
    case TensorDtype::F16: return "F16";
    case TensorDtype::BF16: return "BF16";
    case TensorDtype::F32: return "F32";
    case TensorDtype::F64: return "F64";
    case TensorDtype::I32: return "I32";
    case TensorDtype::I64: return "I64";
  }
  return "?";
}

/// Bytes per element.
inline std::size_t dtype_size(TensorDtype d) {
  switch (d) {
    case TensorDtype::F16:
    case TensorDtype::BF16: return 2;
    case TensorDtype::F32:
    case TensorDtype::I32: return 4;
    case TensorDtype::F64:
    case TensorDtype::I64: return 8;
  }
  return 0;
}

/// Where one tensor lives: its dtype, PyTorch shape and byte range in the data section.
struct TensorInfo {
  std::string name;
  TensorDtype dtype = TensorDtype::F32;
  std::vector<Index> shape;
  std::size_t begin = 0;  ///< First byte, relative to the data section.
  std::size_t end = 0;    ///< One past the last byte.

  Index numel() const {
    Index n = 1;
    for (Index d : shape) n *= d;
    return n;
  }
};

/// IEEE half (binary16) to float, exactly (every half is representable as a float).
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t mantissa = h & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0x1f) {  // inf or NaN
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal half: renormalise
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3ffu;
    bits = sign | (std::uint32_t(113 - shift) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// bfloat16 to float: the upper 16 bits of a float.
inline float bfloat16_to_float(std::uint16_t b) {
  const std::uint32_t bits = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// A safetensors file held in memory, its header parsed and validated.
class SafetensorsFile {
 public:
  /// Reads and validates the file at `path`.
  static SafetensorsFile read(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw error(ssm::detail::concat("read_safetensors: ", path, ": cannot open the file"));
    std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    return parse(std::move(bytes), path);
  }

  /// Validates the bytes of a whole file; `source` names it in messages.
  static SafetensorsFile parse(std::vector<unsigned char> bytes, std::string source = "<memory>") {
    SafetensorsFile f;
    f.source_ = std::move(source);
    f.bytes_ = std::move(bytes);
    f.parse_header();
    return f;
  }

  /// Tensor names, sorted.
  const std::vector<std::string>& names() const { return names_; }

  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }

  /// The tensor's dtype, shape and byte range; `ssm::error` naming it when absent.
  const TensorInfo& info(const std::string& name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) fail(ssm::detail::concat("tensor '", name, "': not in the file"));
    return it->second;
  }

  /// String metadata from "__metadata__" (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The tensor's elements in PyTorch's C order, converted to `T` (float or double). A floating-point tensor
  /// only: an integer one (I32, I64) is an `ssm::error` pointing to `integers`.
  template <class T>
  std::vector<T> values(const std::string& name) const {
    const TensorInfo& t = info(name);
    if (is_integer_dtype(t.dtype))
      fail(ssm::detail::concat("tensor '", name, "': expected a floating-point dtype (F16, BF16, F32, F64), got ",
                               dtype_name(t.dtype), " (read integer tensors with integers())"));
    const unsigned char* p = data_begin() + t.begin;
    const std::size_t n = static_cast<std::size_t>(t.numel());
    std::vector<T> out(n);
    switch (t.dtype) {
      case TensorDtype::F16:
        for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<T>(half_to_float(load<std::uint16_t>(p + 2 * i)));
        break;
      case TensorDtype::BF16:
        for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<T>(bfloat16_to_float(load<std::uint16_t>(p + 2 * i)));
        break;
      case TensorDtype::F32:
        for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<T>(load<float>(p + 4 * i));
        break;
      case TensorDtype::F64:
        for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<T>(load<double>(p + 8 * i));
        break;
      case TensorDtype::I32:
      case TensorDtype::I64: break;  // refused above
    }
    return out;
  }

  /// An integer tensor's elements (I32 or I64, little-endian) in PyTorch's C order, as int64. A 0-d tensor
  /// (a scalar buffer such as S4's `l_kernel`) gives one value. A floating-point tensor is an `ssm::error`.
  std::vector<std::int64_t> integers(const std::string& name) const {
    const TensorInfo& t = info(name);
    if (!is_integer_dtype(t.dtype))
      fail(ssm::detail::concat("tensor '", name, "': expected an integer dtype (I32, I64), got ", dtype_name(t.dtype)));
    const unsigned char* p = data_begin() + t.begin;
    const std::size_t n = static_cast<std::size_t>(t.numel());
    std::vector<std::int64_t> out(n);
    if (t.dtype == TensorDtype::I64)
      for (std::size_t i = 0; i < n; ++i) out[i] = load<std::int64_t>(p + 8 * i);
    else
      for (std::size_t i = 0; i < n; ++i) out[i] = load<std::int32_t>(p + 4 * i);
    return out;
  }

  /// The tensor as a matrix: 0-d or 1-d (n) -> n x 1; (r, c) -> r x c (row-major source honoured);
  /// (d0, d1, ..., dk) -> d0 x (d1 ... dk), each row one flattened slice (e.g. conv1d weight
  /// (channels, 1, width) -> channels x width).
  template <class T>
  MatrixX<T> matrix(const std::string& name) const {
    const TensorInfo& t = info(name);
    const Index rows = t.shape.empty() ? 1 : t.shape[0];
    const Index cols = rows == 0 ? 0 : t.numel() / std::max<Index>(rows, 1);
    const std::vector<T> flat = values<T>(name);
    return Eigen::Map<const RowMatrixX<T>>(flat.data(), rows, cols);
  }

  /// Like `matrix`, but first checks the PyTorch shape is exactly `shape`, with an error naming
  /// the tensor, the expected and the actual shape.
  template <class T>
  MatrixX<T> matrix(const std::string& name, const std::vector<Index>& shape) const {
    const TensorInfo& t = info(name);
    if (t.shape != shape) fail(ssm::detail::concat("tensor '", name, "': expected shape ", shape_text(shape), ", got ",
                                                   shape_text(t.shape)));
    return matrix<T>(name);
  }

  /// "(a, b, c)".
  static std::string shape_text(const std::vector<Index>& shape) {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += ssm::detail::concat(i ? ", " : "", shape[i]);
    return s + ")";
  }

  const std::string& source() const { return source_; }

 private:
  template <class Raw>
  static Raw load(const unsigned char* p) {
    Raw v;
    std::memcpy(&v, p, sizeof(Raw));
    return v;
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw error(ssm::detail::concat("read_safetensors: ", source_, ": ", what));
  }

  const unsigned char* data_begin() const { return bytes_.data() + 8 + header_length_; }

  void parse_header() {
    const std::size_t size = bytes_.size();
    if (size < 8) fail(ssm::detail::concat("expected at least 8 bytes (the header length), got ", size));
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes_[std::size_t(i)];
    if (n > size - 8)
      fail(ssm::detail::concat("header length: expected at most ", size - 8, " (the bytes after it), got ", n));
    header_length_ = static_cast<std::size_t>(n);
    const std::size_t data_size = size - 8 - header_length_;

    const auto json = nlohmann::json::parse(bytes_.begin() + 8, bytes_.begin() + 8 + std::ptrdiff_t(header_length_),
                                            nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded()) fail("header: expected a JSON object, got text that does not parse as JSON");
    if (!json.is_object()) fail(ssm::detail::concat("header: expected a JSON object, got a JSON ", json.type_name()));

    for (const auto& [name, entry] : json.items()) {
      if (name == "__metadata__") {
        if (!entry.is_object()) fail("__metadata__: expected an object of strings");
        for (const auto& [key, value] : entry.items()) {
          if (!value.is_string()) fail(ssm::detail::concat("__metadata__.", key, ": expected a string, got a ", value.type_name()));
          metadata_[key] = value.get<std::string>();
        }
        continue;
      }
      const std::string where = ssm::detail::concat("tensor '", name, "'");
      if (!entry.is_object()) fail(where + ": expected an object with dtype, shape and data_offsets");
      TensorInfo t;
      t.name = name;
      const auto dtype = entry.find("dtype");
      if (dtype == entry.end() || !dtype->is_string()) fail(where + ": dtype: expected a string");
      const std::string d = dtype->get<std::string>();
      if (d == "F16") t.dtype = TensorDtype::F16;
      else if (d == "BF16") t.dtype = TensorDtype::BF16;
      else if (d == "F32") t.dtype = TensorDtype::F32;
      else if (d == "F64") t.dtype = TensorDtype::F64;
      else if (d == "I32") t.dtype = TensorDtype::I32;
      else if (d == "I64") t.dtype = TensorDtype::I64;
      else fail(ssm::detail::concat(where, ": dtype: expected F16, BF16, F32, F64, I32 or I64, got ", d));

      const auto shape = entry.find("shape");
      if (shape == entry.end() || !shape->is_array() || shape->size() > 16)
        fail(where + ": shape: expected an array of at most 16 non-negative integers");
      std::uint64_t numel = 1;
      bool overflow = false;
      for (const auto& dim : *shape) {
        if (!dim.is_number_unsigned()) fail(where + ": shape: expected non-negative integers");
        const std::uint64_t v = dim.get<std::uint64_t>();
        if (v > (std::uint64_t(1) << 40)) overflow = true;
        if (v != 0 && numel > std::numeric_limits<std::uint64_t>::max() / v) overflow = true;
        if (!overflow) numel *= v;
        t.shape.push_back(static_cast<Index>(std::min<std::uint64_t>(v, std::uint64_t(1) << 40)));
      }
      const auto offsets = entry.find("data_offsets");
      if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
          !(*offsets)[1].is_number_unsigned())
        fail(where + ": data_offsets: expected [begin, end], two non-negative integers");
      const std::uint64_t begin = (*offsets)[0].get<std::uint64_t>();
      const std::uint64_t end = (*offsets)[1].get<std::uint64_t>();
      if (begin > end || end > data_size)
        fail(ssm::detail::concat(where, ": data_offsets: expected 0 <= begin <= end <= ", data_size,
                                 " (the data section), got [", begin, ", ", end, "]"));
      const std::uint64_t item = dtype_size(t.dtype);
      if (overflow || numel > (end - begin) / item || numel * item != end - begin)
        fail(ssm::detail::concat(where, ": expected ", end - begin, " bytes to hold shape ", shape_text(t.shape), " of ",
                                 d, ", which needs ", overflow ? std::string("more than 2^64") : ssm::detail::concat(numel * item)));
      t.begin = static_cast<std::size_t>(begin);
      t.end = static_cast<std::size_t>(end);
      names_.push_back(name);
      tensors_.emplace(name, std::move(t));
    }
    std::sort(names_.begin(), names_.end());
  }

  std::string source_;
  std::vector<unsigned char> bytes_;
  std::size_t header_length_ = 0;
  std::vector<std::string> names_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// One tensor to write: name, PyTorch shape, values in C order.
struct TensorToWrite {
  std::string name;
  std::vector<Index> shape;
  std::vector<float> values;
};

/// Builds the bytes of a safetensors file holding `tensors` as F32 (for tests and tools).
inline std::vector<unsigned char> make_safetensors(const std::vector<TensorToWrite>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::size_t offset = 0;
  for (const auto& t : tensors) {
    Index n = 1;
    for (Index d : t.shape) n *= d;
    check(n == Index(t.values.size()), "make_safetensors", t.name.c_str(),
          ssm::detail::concat(n, " values (the shape's product)"), ssm::detail::concat(t.values.size()));
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + 4 * t.values.size()}}};
    offset += 4 * t.values.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the format pads the header with spaces to 8 bytes
  std::vector<unsigned char> out(8 + text.size() + offset);
  std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[std::size_t(i)] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 8, text.data(), text.size());
  std::size_t at = 8 + text.size();
  for (const auto& t : tensors) {
    std::memcpy(out.data() + at, t.values.data(), 4 * t.values.size());
    at += 4 * t.values.size();
  }
  return out;
}

/// Writes `tensors` as an F32 safetensors file.
inline void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors) {
  const auto bytes = make_safetensors(tensors);
  std::ofstream file(path, std::ios::binary);
  if (!file) throw error(ssm::detail::concat("write_safetensors: ", path, ": cannot open the file for writing"));
  file.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  if (!file) throw error(ssm::detail::concat("write_safetensors: ", path, ": write failed"));
}

}  // namespace ssm::io
