#pragma once
/// \file safetensors.hpp
/// Reading safetensors files (the weight format of Hugging Face and PyTorch exports), memory-mapped
/// (io/mapped_file.hpp); sharded checkpoints are io/checkpoint.hpp.
///
/// Layout: an 8-byte little-endian header length n, n bytes of JSON
///   {"name": {"dtype": "F32", "shape": [r, c], "data_offsets": [begin, end]}, ..., "__metadata__": {...}}
/// then the data; offsets are relative to the first byte after the header. Tensors are stored
/// in PyTorch's row-major (C) order; `matrix()` honours that, so a (r, c) weight becomes the same
/// r x c Eigen matrix. Every length, offset and shape is checked against the bytes really present
/// before it is used: a truncated or corrupt file is an `ssm::error`, never a crash or an
/// allocation sized by an unchecked field.

#include "ssm/core/error.hpp"
#include "ssm/core/number_formats.hpp"
#include "ssm/core/types.hpp"
#include "ssm/io/byte_order.hpp"
#include "ssm/io/mapped_file.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

namespace ssm::io {

/// Every element type the safetensors format defines. The reader recognises them all (a header naming
/// another is an error); which ones a caller can read is said by the readers: `values` / `matrix` convert
/// the floating types F16, BF16, F32 and F64, `integers` the integer types and BOOL, and `view` gives
/// F32 / F64 data in place. The 8-bit and smaller float formats (F8_*, F6_*, F4) are recognised and
/// refused by name when read.
enum class TensorDtype {
  BOOL, U8, I8, I16, U16, I32, U32, I64, U64,
  F16, BF16, F32, F64,
  F8_E4M3, F8_E5M2, F8_E8M0, F6_E2M3, F6_E3M2, F4
};

/// The dtype's name as the format writes it ("F32", "I64", ...).
inline const char* dtype_name(TensorDtype d) {
  switch (d) {
    case TensorDtype::BOOL: return "BOOL";
    case TensorDtype::U8: return "U8";
    case TensorDtype::I8: return "I8";
    case TensorDtype::I16: return "I16";
    case TensorDtype::U16: return "U16";
    case TensorDtype::I32: return "I32";
    case TensorDtype::U32: return "U32";
    case TensorDtype::I64: return "I64";
    case TensorDtype::U64: return "U64";
    case TensorDtype::F16: return "F16";
    case TensorDtype::BF16: return "BF16";
    case TensorDtype::F32: return "F32";
    case TensorDtype::F64: return "F64";
    case TensorDtype::F8_E4M3: return "F8_E4M3";
    case TensorDtype::F8_E5M2: return "F8_E5M2";
    case TensorDtype::F8_E8M0: return "F8_E8M0";
    case TensorDtype::F6_E2M3: return "F6_E2M3";
    case TensorDtype::F6_E3M2: return "F6_E3M2";
    case TensorDtype::F4: return "F4";
  }
  return "?";
}

/// Bits per element (the sub-byte float formats pack several elements per byte).
inline std::size_t dtype_bits(TensorDtype d) {
  switch (d) {
    case TensorDtype::F4: return 4;
    case TensorDtype::F6_E2M3:
    case TensorDtype::F6_E3M2: return 6;
    case TensorDtype::BOOL:
    case TensorDtype::U8:
    case TensorDtype::I8:
    case TensorDtype::F8_E4M3:
    case TensorDtype::F8_E5M2:
    case TensorDtype::F8_E8M0: return 8;
    case TensorDtype::I16:
    case TensorDtype::U16:
    case TensorDtype::F16:
    case TensorDtype::BF16: return 16;
    case TensorDtype::I32:
    case TensorDtype::U32:
    case TensorDtype::F32: return 32;
    case TensorDtype::I64:
    case TensorDtype::U64:
    case TensorDtype::F64: return 64;
  }
  return 0;
}

/// Bytes per element for the whole-byte dtypes (0 for F4 and F6_*).
inline std::size_t dtype_size(TensorDtype d) { return dtype_bits(d) % 8 == 0 ? dtype_bits(d) / 8 : 0; }

/// The dtype named `text` ("F32", ...); false when the format defines no such dtype.
inline bool parse_dtype(const std::string& text, TensorDtype& out) {
  for (int i = 0; i <= int(TensorDtype::F4); ++i)
    if (text == dtype_name(TensorDtype(i))) {
      out = TensorDtype(i);
      return true;
    }
  return false;
}

/// True for the dtypes `integers` reads: BOOL and the signed and unsigned integers.
inline bool is_integer_dtype(TensorDtype d) { return int(d) <= int(TensorDtype::U64); }

/// True for the dtypes `values` and `matrix` convert: F16, BF16, F32, F64.
inline bool is_readable_float_dtype(TensorDtype d) {
  return d == TensorDtype::F16 || d == TensorDtype::BF16 || d == TensorDtype::F32 || d == TensorDtype::F64;
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

// The 16-bit conversions live in core/number_formats.hpp; their io:: names are kept.
using ssm::bfloat16_to_float;
using ssm::half_to_float;

/// A safetensors file, memory-mapped (or bytes in memory), its header parsed and validated.
///
/// Nothing of the data is read when the file is opened: the header alone is checked. Every tensor's
/// dtype must be one the format defines, its shape product must not overflow and must fill its byte
/// range exactly, its range must lie in the data section, start at a multiple of its element size and
/// not overlap another tensor's range. Reading converts on demand; on a mapped file each tensor's
/// pages are handed back to the system as they are converted (`ByteSource::release`), so a loader that
/// converts every tensor once holds its converted copy plus a window of about 1 MB, not the file too.
/// Copies share the mapping. Reading is thread-safe.
class SafetensorsFile {
 public:
  /// Maps and validates the file at `path`.
  static SafetensorsFile read(const std::string& path) {
    ByteSource bytes;
    try {
      bytes = ByteSource::map_file(path);
    } catch (const error& e) {
      throw error(ssm::detail::concat("read_safetensors: ", e.what()));
    }
    return open(std::move(bytes), path);
  }

  /// Validates the bytes of a whole file held in memory; `source` names it in messages.
  static SafetensorsFile parse(std::vector<unsigned char> bytes, std::string source = "<memory>") {
    return open(ByteSource::from_bytes(std::move(bytes)), std::move(source));
  }

  /// Validates a file's bytes, mapped or in memory; `source` names it in messages.
  static SafetensorsFile open(ByteSource bytes, std::string source) {
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

  /// The tensor's elements in PyTorch's C order, converted to `T` (float or double). F16, BF16, F32 and
  /// F64 only: any other dtype is an `ssm::error` naming it (integers are read with `integers`).
  template <class T>
  std::vector<T> values(const std::string& name) const {
    const TensorInfo& t = float_tensor(name);
    std::vector<T> out(static_cast<std::size_t>(t.numel()));
    for_each_window(t, [&](std::size_t first, std::size_t count) { convert(t, first, count, out.data() + first); });
    return out;
  }

  /// An integer or BOOL tensor's elements (little-endian) in PyTorch's C order, as int64. A 0-d tensor (a
  /// scalar buffer such as S4's `l_kernel`) gives one value. A floating-point tensor, or a U64 value above
  /// the int64 range, is an `ssm::error`.
  std::vector<std::int64_t> integers(const std::string& name) const {
    const TensorInfo& t = info(name);
    if (!is_integer_dtype(t.dtype))
      fail(ssm::detail::concat("tensor '", name, "': expected an integer dtype (BOOL, U8, I8, I16, U16, I32, U32, I64, U64), got ",
                               dtype_name(t.dtype)));
    const unsigned char* p = data_begin() + t.begin;
    const std::size_t n = static_cast<std::size_t>(t.numel()), item = dtype_size(t.dtype);
    const bool is_signed = t.dtype == TensorDtype::I8 || t.dtype == TensorDtype::I16 || t.dtype == TensorDtype::I32 ||
                           t.dtype == TensorDtype::I64;
    std::vector<std::int64_t> out(n);
    for (std::size_t i = 0; i < n; ++i) {
      std::uint64_t raw = 0;
      for (std::size_t b = 0; b < item; ++b) raw |= std::uint64_t(p[i * item + b]) << (8 * b);
      if (is_signed && item < 8 && (raw >> (8 * item - 1)) != 0) raw |= ~std::uint64_t(0) << (8 * item);  // sign-extend
      if (t.dtype == TensorDtype::U64 && raw > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
        fail(ssm::detail::concat("tensor '", name, "': U64 value ", raw, " at element ", i, " is above the int64 range"));
      std::int64_t v;
      std::memcpy(&v, &raw, 8);
      out[i] = v;
    }
    return out;
  }

  /// The tensor as a matrix: 0-d or 1-d (n) -> n x 1; (r, c) -> r x c (row-major source honoured);
  /// (d0, d1, ..., dk) -> d0 x (d1 ... dk), each row one flattened slice (e.g. conv1d weight
  /// (channels, 1, width) -> channels x width). Converted straight into the result, window by window.
  template <class T>
  MatrixX<T> matrix(const std::string& name) const {
    const TensorInfo& t = float_tensor(name);
    const Index rows = t.shape.empty() ? 1 : t.shape[0];
    const Index cols = rows == 0 ? 0 : t.numel() / std::max<Index>(rows, 1);
    MatrixX<T> out(rows, cols);
    if (out.size() == 0) return out;
    std::vector<T> window;
    const std::size_t width = static_cast<std::size_t>(cols);
    for_each_window(t, [&](std::size_t first, std::size_t count) {
      window.resize(count);
      convert(t, first, count, window.data());
      if (first % width == 0 && count % width == 0) {  // whole rows (the usual case): one block, Eigen transposes
        out.middleRows(Index(first / width), Index(count / width)) =
            Eigen::Map<const RowMatrixX<T>>(window.data(), Index(count / width), cols);
        return;
      }
      for (std::size_t at = first; at < first + count;) {  // a row larger than a window, piece by piece
        const std::size_t r = at / width, c = at % width, len = std::min(width - c, first + count - at);
        out.row(Index(r)).segment(Index(c), Index(len)) =
            Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(window.data() + (at - first), Index(len));
        at += len;
      }
    });
    return out;
  }

  /// Like `matrix`, but first checks the PyTorch shape is exactly `shape`, with an error naming
  /// the tensor, the expected and the actual shape.
  template <class T>
  MatrixX<T> matrix(const std::string& name, const std::vector<Index>& shape) const {
    check_shape_of(name, shape);
    return matrix<T>(name);
  }

  /// Calls f(first_row, row_count, values) over the rows of tensor `name`, whose PyTorch shape must be
  /// `shape` (rows = shape[0], each row the flattened rest, as `matrix`), in blocks of about 1 MB of
  /// source and at least one row: `values` holds the block's rows converted to T, row-major (row_count x
  /// the row width). Each block's pages are released after f. For a consumer that stores rows in a form of
  /// its own (core/weight_matrix.hpp) without a T copy of the whole tensor.
  template <class T, class F>
  void for_each_row_block(const std::string& name, const std::vector<Index>& shape, F&& f) const {
    check_shape_of(name, shape);
    const TensorInfo& t = float_tensor(name);
    const std::size_t rows = t.shape.empty() ? 1 : static_cast<std::size_t>(t.shape[0]);
    const std::size_t n = static_cast<std::size_t>(t.numel());
    if (rows == 0 || n == 0) return;
    const std::size_t width = n / rows, per_block = std::max<std::size_t>(1, window_bytes / (dtype_size(t.dtype) * width));
    std::vector<T> block;
    for (std::size_t r0 = 0; r0 < rows; r0 += per_block) {
      const std::size_t count = std::min(per_block, rows - r0);
      block.resize(count * width);
      convert(t, r0 * width, count * width, block.data());
      f(Index(r0), Index(count), static_cast<const T*>(block.data()));
      release_elements(t, r0 * width, count * width);
    }
  }

  /// The tensor in place, without a copy: a read-only row-major rows x cols map (shapes as `matrix`) of the
  /// file's bytes, valid while this file (or a copy of it) lives. Only for data already in T's form: dtype
  /// F32 for float, F64 for double, on a little-endian machine, at an address aligned for T (the format's
  /// writers pad the header so that it is). Otherwise an `ssm::error` saying which condition failed.
  template <class T>
  Eigen::Map<const RowMatrixX<T>> view(const std::string& name) const {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "view: T must be float or double");
    const TensorInfo& t = info(name);
    const TensorDtype want = std::is_same_v<T, float> ? TensorDtype::F32 : TensorDtype::F64;
    if (t.dtype != want)
      fail(ssm::detail::concat("tensor '", name, "': a view needs dtype ", dtype_name(want), ", got ",
                               dtype_name(t.dtype), " (matrix() converts)"));
    if (!detail::host_is_little_endian()) fail(ssm::detail::concat("tensor '", name, "': a view needs a little-endian machine"));
    const unsigned char* p = data_begin() + t.begin;
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0)
      fail(ssm::detail::concat("tensor '", name, "': a view needs its data aligned to ", alignof(T),
                               " bytes (the header length is not padded); matrix() converts"));
    const Index rows = t.shape.empty() ? 1 : t.shape[0];
    const Index cols = rows == 0 ? 0 : t.numel() / std::max<Index>(rows, 1);
    return Eigen::Map<const RowMatrixX<T>>(reinterpret_cast<const T*>(p), rows, cols);
  }

  /// Throws an `ssm::error` naming the tensor, the expected and the actual shape unless its PyTorch
  /// shape is exactly `shape`.
  void check_shape_of(const std::string& name, const std::vector<Index>& shape) const {
    const TensorInfo& t = info(name);
    if (t.shape != shape) fail(ssm::detail::concat("tensor '", name, "': expected shape ", shape_text(shape), ", got ",
                                                   shape_text(t.shape)));
  }

  /// "(a, b, c)".
  static std::string shape_text(const std::vector<Index>& shape) {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += ssm::detail::concat(i ? ", " : "", shape[i]);
    return s + ")";
  }

  const std::string& source() const { return source_; }
  /// True when the file is memory-mapped (not read into memory).
  bool is_mapped() const { return bytes_.is_mapped(); }

  /// The most bytes the header may have (the limit of the format's reference reader).
  static constexpr std::uint64_t max_header_length = 100'000'000;

 private:
  /// Source bytes converted per window: whole pages go back to the system after each.
  static constexpr std::size_t window_bytes = std::size_t(1) << 20;

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

  /// info(name), checked to be a dtype `values` / `matrix` convert.
  const TensorInfo& float_tensor(const std::string& name) const {
    const TensorInfo& t = info(name);
    if (!is_readable_float_dtype(t.dtype))
      fail(ssm::detail::concat("tensor '", name, "': expected a floating-point dtype (F16, BF16, F32, F64), got ",
                               dtype_name(t.dtype), is_integer_dtype(t.dtype) ? " (read integer tensors with integers())" : ""));
    return t;
  }

  /// Calls f(first, count) over the tensor's elements in windows of about `window_bytes` of source, each
  /// a whole number of rows where a row fits, and releases each window's pages after it.
  template <class F>
  void for_each_window(const TensorInfo& t, F&& f) const {
    const std::size_t n = static_cast<std::size_t>(t.numel()), item = dtype_size(t.dtype);
    if (n == 0) return;
    const std::size_t row = t.shape.size() >= 2 ? n / static_cast<std::size_t>(std::max<Index>(t.shape[0], 1)) : 1;
    std::size_t per_window = std::max<std::size_t>(window_bytes / item, 1);
    if (row <= per_window) per_window = per_window / row * row;
    for (std::size_t first = 0; first < n; first += per_window) {
      const std::size_t count = std::min(per_window, n - first);
      f(first, count);
      release_elements(t, first, count);
    }
  }

  /// Hands the pages of elements [first, first + count) of tensor t back to the system (ByteSource::release).
  void release_elements(const TensorInfo& t, std::size_t first, std::size_t count) const {
    const std::size_t base = 8 + header_length_ + t.begin, item = dtype_size(t.dtype);
    bytes_.release(base + first * item, base + (first + count) * item);
  }

  /// Converts elements [first, first + count) of a floating tensor to T.
  template <class T>
  void convert(const TensorInfo& t, std::size_t first, std::size_t count, T* out) const {
    const unsigned char* p = data_begin() + t.begin;
    switch (t.dtype) {
      case TensorDtype::F16:
        for (std::size_t i = 0; i < count; ++i) out[i] = static_cast<T>(half_to_float(load<std::uint16_t>(p + 2 * (first + i))));
        break;
      case TensorDtype::BF16:
        for (std::size_t i = 0; i < count; ++i)
          out[i] = static_cast<T>(bfloat16_to_float(load<std::uint16_t>(p + 2 * (first + i))));
        break;
      case TensorDtype::F32:
        for (std::size_t i = 0; i < count; ++i) out[i] = static_cast<T>(load<float>(p + 4 * (first + i)));
        break;
      case TensorDtype::F64:
        for (std::size_t i = 0; i < count; ++i) out[i] = static_cast<T>(load<double>(p + 8 * (first + i)));
        break;
      default: break;  // refused by float_tensor
    }
  }

  void parse_header() {
    const std::size_t size = bytes_.size();
    if (size < 8) fail(ssm::detail::concat("expected at least 8 bytes (the header length), got ", size));
    const unsigned char* bytes = bytes_.data();
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
    if (n > size - 8)
      fail(ssm::detail::concat("header length: expected at most ", size - 8, " (the bytes after it), got ", n));
    if (n > max_header_length)
      fail(ssm::detail::concat("header length: expected at most ", max_header_length, " bytes, got ", n));
    header_length_ = static_cast<std::size_t>(n);
    const std::size_t data_size = size - 8 - header_length_;

    const auto json = nlohmann::json::parse(bytes + 8, bytes + 8 + header_length_, nullptr, /*allow_exceptions=*/false);
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
      if (!parse_dtype(d, t.dtype))
        fail(ssm::detail::concat(where, ": dtype: expected one of the format's (BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, "
                                 "BF16, F32, F64, F8_E4M3, F8_E5M2, F8_E8M0, F6_E2M3, F6_E3M2, F4), got ", d));

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
      const std::uint64_t bits = dtype_bits(t.dtype);
      if (overflow || numel > (end - begin) * 8 / bits || numel * bits != (end - begin) * 8)
        fail(ssm::detail::concat(where, ": expected ", end - begin, " bytes to hold shape ", shape_text(t.shape), " of ",
                                 d, ", which needs ",
                                 overflow ? std::string("more than 2^64") : ssm::detail::concat(numel * bits / 8.0)));
      const std::uint64_t item = std::max<std::uint64_t>(bits / 8, 1);
      if (begin % item != 0)
        fail(ssm::detail::concat(where, ": data_offsets: expected begin to be a multiple of ", item, " (the size of ", d,
                                 "), got ", begin, " (misaligned)"));
      t.begin = static_cast<std::size_t>(begin);
      t.end = static_cast<std::size_t>(end);
      names_.push_back(name);
      tensors_.emplace(name, std::move(t));
    }
    std::sort(names_.begin(), names_.end());
    // No two tensors may share a byte: sorted by start, each must end before the next begins.
    std::vector<const TensorInfo*> by_start;
    for (const auto& entry : tensors_)
      if (entry.second.end > entry.second.begin) by_start.push_back(&entry.second);
    std::sort(by_start.begin(), by_start.end(), [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < by_start.size(); ++i)
      if (by_start[i]->begin < by_start[i - 1]->end)
        fail(ssm::detail::concat("tensor '", by_start[i]->name, "': data_offsets [", by_start[i]->begin, ", ", by_start[i]->end,
                                 ") overlap those of tensor '", by_start[i - 1]->name, "' [", by_start[i - 1]->begin, ", ",
                                 by_start[i - 1]->end, ")"));
  }

  std::string source_;
  ByteSource bytes_;
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
    check(!header.contains(t.name), "make_safetensors", t.name.c_str(), "one tensor of this name", "two");
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
