#pragma once
/// \file npy.hpp
/// Reading and writing NumPy `.npy` files (format versions 1, 2 and 3).
///
/// Supported element types: float32 (`<f4`), float64 (`<f8`), complex64 (`<c8`),
/// complex128 (`<c16`), int32 (`<i4`) and int64 (`<i8`), little-endian, in C or Fortran
/// order. Every header field is checked against the bytes that are really there before
/// anything is allocated from it: a truncated or corrupt file is an `ssm::error`.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/io/byte_order.hpp"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace ssm::io {

/// Element type of a .npy array.
enum class NpyType { float32, float64, complex64, complex128, int32, int64 };

/// Bytes per element of `type`.
inline std::size_t npy_item_size(NpyType type) {
  switch (type) {
    case NpyType::float32: return 4;
    case NpyType::float64: return 8;
    case NpyType::complex64: return 8;
    case NpyType::complex128: return 16;
    case NpyType::int32: return 4;
    case NpyType::int64: return 8;
  }
  return 0;
}

/// The NumPy descriptor string of `type` ("<f8", ...).
inline const char* npy_descr(NpyType type) {
  switch (type) {
    case NpyType::float32: return "<f4";
    case NpyType::float64: return "<f8";
    case NpyType::complex64: return "<c8";
    case NpyType::complex128: return "<c16";
    case NpyType::int32: return "<i4";
    case NpyType::int64: return "<i8";
  }
  return "?";
}

/// An array read from a .npy file: its element type, shape, order and raw little-endian bytes.
struct NpyArray {
  NpyType type = NpyType::float64;
  std::vector<Index> shape;    ///< NumPy shape; empty for a 0-d array.
  bool fortran_order = false;  ///< True when the bytes are in column-major (Fortran) order.
  std::vector<unsigned char> data;
  std::string source;  ///< File name, for messages.

  /// Number of elements (product of the shape; 1 for a 0-d array).
  Index size() const {
    Index n = 1;
    for (Index d : shape) n *= d;
    return n;
  }

  bool is_complex() const { return type == NpyType::complex64 || type == NpyType::complex128; }

  /// All elements converted to `T`, in C (row-major) logical order whatever the storage order.
  /// `T` may be float, double, int64_t or std::complex<float/double>. Converting complex data to a
  /// real `T` is an error (it would drop the imaginary part); real to complex is allowed.
  template <class T>
  std::vector<T> values() const;

  /// A 0-d or 1-d array as an n x 1 matrix, a 2-d array (r, c) as an r x c matrix.
  template <class T>
  MatrixX<T> matrix() const;
};

namespace detail {

template <class T>
struct is_complex_t : std::false_type {};
template <class T>
struct is_complex_t<std::complex<T>> : std::true_type {};

template <class Raw>
Raw load_le(const unsigned char* p) {
  Raw v;
  std::memcpy(&v, p, sizeof(Raw));  // the host is little-endian (checked at compile time below)
  return v;
}

template <class T>
T convert_element(NpyType type, const unsigned char* p, const std::string& source) {
  if constexpr (is_complex_t<T>::value) {
    using R = typename T::value_type;
    switch (type) {
      case NpyType::float32: return T(static_cast<R>(load_le<float>(p)), R(0));
      case NpyType::float64: return T(static_cast<R>(load_le<double>(p)), R(0));
      case NpyType::complex64:
        return T(static_cast<R>(load_le<float>(p)), static_cast<R>(load_le<float>(p + 4)));
      case NpyType::complex128:
        return T(static_cast<R>(load_le<double>(p)), static_cast<R>(load_le<double>(p + 8)));
      case NpyType::int32: return T(static_cast<R>(load_le<std::int32_t>(p)), R(0));
      case NpyType::int64: return T(static_cast<R>(load_le<std::int64_t>(p)), R(0));
    }
  } else {
    switch (type) {
      case NpyType::float32: return static_cast<T>(load_le<float>(p));
      case NpyType::float64: return static_cast<T>(load_le<double>(p));
      case NpyType::int32: return static_cast<T>(load_le<std::int32_t>(p));
      case NpyType::int64: return static_cast<T>(load_le<std::int64_t>(p));
      case NpyType::complex64:
      case NpyType::complex128:
        throw error(ssm::detail::concat("read_npy: ", source,
                                        ": expected real data for a real target type, got complex data"));
    }
  }
  return T{};
}

/// Parses the Python-literal header dict of a .npy file.
inline void parse_npy_header(const std::string& header, NpyArray& out) {
  const std::string& src = out.source;
  auto fail = [&](const std::string& what) {
    throw error(ssm::detail::concat("read_npy: ", src, ": malformed header: ", what));
  };
  auto find_key = [&](const char* key) -> std::size_t {
    const std::string quoted1 = std::string("'") + key + "'";
    std::size_t pos = header.find(quoted1);
    if (pos == std::string::npos) fail(ssm::detail::concat("no '", key, "' key"));
    pos = header.find(':', pos + quoted1.size());
    if (pos == std::string::npos) fail(ssm::detail::concat("no ':' after '", key, "'"));
    ++pos;
    while (pos < header.size() && header[pos] == ' ') ++pos;
    return pos;
  };

  // descr
  std::size_t pos = find_key("descr");
  if (pos >= header.size() || header[pos] != '\'') fail("descr is not a quoted string");
  const std::size_t end = header.find('\'', pos + 1);
  if (end == std::string::npos) fail("unterminated descr");
  const std::string descr = header.substr(pos + 1, end - pos - 1);
  if (descr == "<f4") out.type = NpyType::float32;
  else if (descr == "<f8") out.type = NpyType::float64;
  else if (descr == "<c8") out.type = NpyType::complex64;
  else if (descr == "<c16") out.type = NpyType::complex128;
  else if (descr == "<i4") out.type = NpyType::int32;
  else if (descr == "<i8") out.type = NpyType::int64;
  else
    throw error(ssm::detail::concat("read_npy: ", src,
                                    ": descr: expected one of <f4 <f8 <c8 <c16 <i4 <i8, got '", descr, "'"));

  // fortran_order
  pos = find_key("fortran_order");
  if (header.compare(pos, 4, "True") == 0) out.fortran_order = true;
  else if (header.compare(pos, 5, "False") == 0) out.fortran_order = false;
  else fail("fortran_order is neither True nor False");

  // shape: a tuple of non-negative integers
  pos = find_key("shape");
  if (pos >= header.size() || header[pos] != '(') fail("shape is not a tuple");
  const std::size_t close = header.find(')', pos);
  if (close == std::string::npos) fail("unterminated shape tuple");
  out.shape.clear();
  std::size_t i = pos + 1;
  while (i < close) {
    while (i < close && (header[i] == ' ' || header[i] == ',')) ++i;
    if (i >= close) break;
    if (header[i] < '0' || header[i] > '9') fail("shape entry is not a non-negative integer");
    std::uint64_t v = 0;
    while (i < close && header[i] >= '0' && header[i] <= '9') {
      v = v * 10 + static_cast<std::uint64_t>(header[i] - '0');
      if (v > (std::uint64_t(1) << 48)) fail("shape entry too large");
      ++i;
    }
    if (i < close && header[i] != ',' && header[i] != ' ') fail("unexpected character in shape");
    out.shape.push_back(static_cast<Index>(v));
    if (out.shape.size() > 32) fail("more than 32 dimensions");
  }
}

}  // namespace detail

/// Parses a whole .npy file held in memory. `source` names it in error messages.
inline NpyArray parse_npy(const unsigned char* bytes, std::size_t size, const std::string& source = "<memory>") {
  if (!detail::host_is_little_endian()) throw error("read_npy: big-endian hosts are not supported");
  NpyArray out;
  out.source = source;
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  check(size >= 10 && std::memcmp(bytes, magic, 6) == 0, "read_npy", source.c_str(),
        "the .npy magic string \\x93NUMPY", "something else (or a file shorter than 10 bytes)");
  const unsigned major = bytes[6];
  check(major >= 1 && major <= 3, "read_npy", source.c_str(), "format version 1, 2 or 3",
        ssm::detail::concat("version ", major));
  std::size_t header_len = 0;
  std::size_t prefix = 0;
  if (major == 1) {
    header_len = std::size_t(bytes[8]) | (std::size_t(bytes[9]) << 8);
    prefix = 10;
  } else {
    check(size >= 12, "read_npy", source.c_str(), "at least 12 bytes", ssm::detail::concat(size));
    header_len = std::size_t(bytes[8]) | (std::size_t(bytes[9]) << 8) | (std::size_t(bytes[10]) << 16) |
                 (std::size_t(bytes[11]) << 24);
    prefix = 12;
  }
  check(header_len <= size - prefix, "read_npy", source.c_str(),
        ssm::detail::concat("a header of at most ", size - prefix, " bytes (what the file holds)"),
        ssm::detail::concat(header_len, " bytes"));
  const std::string header(reinterpret_cast<const char*>(bytes + prefix), header_len);
  detail::parse_npy_header(header, out);

  // Element count and byte size, with overflow checks before any allocation.
  const std::size_t item = npy_item_size(out.type);
  const std::size_t available = size - prefix - header_len;
  std::size_t count = 1;
  for (Index d : out.shape) {
    const auto du = static_cast<std::size_t>(d);
    if (du != 0 && count > available / du) {
      count = std::numeric_limits<std::size_t>::max();
      break;
    }
    count *= du;
  }
  const bool fits = count != std::numeric_limits<std::size_t>::max() && count <= available / item &&
                    count * item == available;
  if (!fits) {
    std::string shape_text = "(";
    for (Index d : out.shape) shape_text += ssm::detail::concat(d, ",");
    shape_text += ")";
    throw error(ssm::detail::concat("read_npy: ", source, ": data: expected exactly prod", shape_text, " x ",
                                    item, " bytes after the header, got ", available, " bytes"));
  }
  out.data.assign(bytes + prefix + header_len, bytes + size);
  return out;
}

/// Reads a .npy file. Throws `ssm::error` naming the file if it cannot be opened or is malformed.
inline NpyArray read_npy(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw error(ssm::detail::concat("read_npy: ", path, ": cannot open the file"));
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  return parse_npy(bytes.data(), bytes.size(), path);
}

template <class T>
std::vector<T> NpyArray::values() const {
  const Index n = size();
  const std::size_t item = npy_item_size(type);
  std::vector<T> out(static_cast<std::size_t>(n));
  if (!fortran_order || shape.size() < 2) {
    for (Index i = 0; i < n; ++i) out[std::size_t(i)] = detail::convert_element<T>(type, &data[std::size_t(i) * item], source);
    return out;
  }
  // Fortran order: storage index of C-order position (i0, ..., ik) is sum_j i_j * prod_{m<j} shape_m.
  const std::size_t dims = shape.size();
  std::vector<Index> index(dims, 0);
  std::vector<Index> stride(dims, 1);
  for (std::size_t j = 1; j < dims; ++j) stride[j] = stride[j - 1] * shape[j - 1];
  for (Index c = 0; c < n; ++c) {
    Index storage = 0;
    for (std::size_t j = 0; j < dims; ++j) storage += index[j] * stride[j];
    out[std::size_t(c)] = detail::convert_element<T>(type, &data[std::size_t(storage) * item], source);
    for (std::size_t j = dims; j-- > 0;) {  // advance the C-order multi-index
      if (++index[j] < shape[j]) break;
      index[j] = 0;
    }
  }
  return out;
}

template <class T>
MatrixX<T> NpyArray::matrix() const {
  check(shape.size() <= 2, "NpyArray::matrix", source.c_str(), "an array of 0, 1 or 2 dimensions",
        ssm::detail::concat(shape.size(), " dimensions"));
  const Index rows = shape.empty() ? 1 : shape[0];
  const Index cols = shape.size() == 2 ? shape[1] : 1;
  const std::vector<T> flat = values<T>();
  MatrixX<T> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) m(i, j) = flat[std::size_t(i * cols + j)];
  return m;
}

namespace detail {

template <class T>
constexpr NpyType npy_type_of() {
  if constexpr (std::is_same_v<T, float>) return NpyType::float32;
  else if constexpr (std::is_same_v<T, double>) return NpyType::float64;
  else if constexpr (std::is_same_v<T, std::complex<float>>) return NpyType::complex64;
  else if constexpr (std::is_same_v<T, std::complex<double>>) return NpyType::complex128;
  else if constexpr (std::is_same_v<T, std::int32_t>) return NpyType::int32;
  else {
    static_assert(std::is_same_v<T, std::int64_t>, "write_npy: unsupported element type");
    return NpyType::int64;
  }
}

inline std::string npy_header(NpyType type, const std::vector<Index>& shape, bool fortran_order) {
  std::string dict = ssm::detail::concat("{'descr': '", npy_descr(type), "', 'fortran_order': ",
                                         fortran_order ? "True" : "False", ", 'shape': (");
  for (std::size_t i = 0; i < shape.size(); ++i) dict += ssm::detail::concat(shape[i], shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
  dict += "), }";
  // magic(6) + version(2) + length(2) + dict + padding + '\n' is a multiple of 64.
  const std::size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>((dict.size() >> 8) & 0xff);
  return out + dict;
}

}  // namespace detail

/// Writes `m` as a 2-d .npy array of shape (rows, cols) in Fortran order (Eigen's own storage,
/// so no transpose is made); NumPy reads it as the same rows x cols matrix.
template <class Derived>
void write_npy(const std::string& path, const Eigen::DenseBase<Derived>& m) {
  using T = typename Derived::Scalar;
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> dense = m;  // column-major copy
  std::ofstream file(path, std::ios::binary);
  if (!file) throw error(ssm::detail::concat("write_npy: ", path, ": cannot open the file for writing"));
  const std::string header = detail::npy_header(detail::npy_type_of<T>(), {dense.rows(), dense.cols()}, true);
  file.write(header.data(), static_cast<std::streamsize>(header.size()));
  file.write(reinterpret_cast<const char*>(dense.data()), static_cast<std::streamsize>(sizeof(T) * dense.size()));
  if (!file) throw error(ssm::detail::concat("write_npy: ", path, ": write failed"));
}

/// Writes `values` as a C-order .npy array of the given `shape` (the product must match).
template <class T>
void write_npy(const std::string& path, const std::vector<T>& values, const std::vector<Index>& shape) {
  Index n = 1;
  for (Index d : shape) n *= d;
  check(n == static_cast<Index>(values.size()), "write_npy", "values", ssm::detail::concat(n, " elements (the shape's product)"),
        ssm::detail::concat(values.size()));
  std::ofstream file(path, std::ios::binary);
  if (!file) throw error(ssm::detail::concat("write_npy: ", path, ": cannot open the file for writing"));
  const std::string header = detail::npy_header(detail::npy_type_of<T>(), shape, false);
  file.write(header.data(), static_cast<std::streamsize>(header.size()));
  file.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(sizeof(T) * values.size()));
  if (!file) throw error(ssm::detail::concat("write_npy: ", path, ": write failed"));
}

}  // namespace ssm::io
