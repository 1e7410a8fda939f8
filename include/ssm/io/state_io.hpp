#pragma once
/// \file state_io.hpp
/// A layer's or model's streaming State as bytes and back: save a stream, restore it later (in another
/// process, on another machine of the same byte order), continue exactly where it stopped.
///
///   std::string bytes = ssm::io::save_state(state);                 // any State of a layer or LM
///   auto restored = layer.initial_state();                          // sizes from the same layer
///   ssm::io::restore_state(bytes, restored);                        // checked; continues bit-exactly
///
/// A State describes itself: `State::kind` names the layer ("S4", "MambaLM", ...), `State::scalar_type` is
/// float or double, and
/// `state.visit(visitor)` hands the visitor every array that carries the stream (name, Eigen matrix of
/// T or std::complex<T>) and every counter (name, Index&); scratch is left out. States are plain values:
/// copying one forks a stream.
///
/// Format, little-endian, version 1:
///   "SSMSTATE" (8 bytes) | version u32 | kind: u32 length + bytes | real scalar size u32 (4 float, 8 double)
///   | entry count u32 | per entry: name (u32 length + bytes), type u8 (0 real, 1 complex, 2 counter),
///     rows u64, cols u64, then rows x cols values column-major (complex: real, imaginary; counter: one i64)
///   | FNV-1a 64-bit hash of every byte before it, u64.
/// `restore_state` reads into a State made by `initial_state()` of the layer to continue with: the kind,
/// scalar, every name, type and shape must match it, the bytes must be complete and the hash right;
/// otherwise ssm::error says what differs, and the State is left untouched.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/io/byte_order.hpp"

#include <complex>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

namespace ssm::io {

namespace detail {

inline constexpr char kStateMagic[8] = {'S', 'S', 'M', 'S', 'T', 'A', 'T', 'E'};
inline constexpr std::uint32_t kStateVersion = 1;
enum : std::uint8_t { kReal = 0, kComplex = 1, kCounter = 2 };

/// FNV-1a, 64 bits: a cheap hash that any changed byte alters.
inline std::uint64_t fnv1a(const char* data, std::size_t n) {
  std::uint64_t h = 14695981039346656037ull;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 1099511628211ull;
  }
  return h;
}

template <class Scalar>
constexpr bool is_complex_v = false;
template <class R>
constexpr bool is_complex_v<std::complex<R>> = true;

/// Appends entries to a byte string.
class StateWriter {
 public:
  explicit StateWriter(std::string& out) : out_(out) {}
  template <class V>
  void raw(const V& v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(V));
  }
  void text(std::string_view s) {
    raw(std::uint32_t(s.size()));
    out_.append(s.data(), s.size());
  }
  /// An array entry.
  template <class Matrix>
  void operator()(std::string_view name, const Matrix& m) {
    using Scalar = typename Matrix::Scalar;
    text(name);
    raw(std::uint8_t(is_complex_v<Scalar> ? kComplex : kReal));
    raw(std::uint64_t(m.rows()));
    raw(std::uint64_t(m.cols()));
    for (Index j = 0; j < m.cols(); ++j)
      for (Index i = 0; i < m.rows(); ++i) raw(m(i, j));
    ++entries;
  }
  /// A counter entry.
  void operator()(std::string_view name, const Index& count) {
    text(name);
    raw(std::uint8_t(kCounter));
    raw(std::uint64_t(1));
    raw(std::uint64_t(1));
    raw(std::int64_t(count));
    ++entries;
  }
  std::uint32_t entries = 0;

 private:
  std::string& out_;
};

/// Walks the bytes against a State's entries: checks everything (`write` false), or copies (`write` true).
class StateReader {
 public:
  StateReader(std::string_view bytes, std::size_t position, bool write)
      : bytes_(bytes), position_(position), write_(write) {}

  template <class V>
  V raw(const char* what) {
    need(sizeof(V), what);
    V v;
    std::memcpy(&v, bytes_.data() + position_, sizeof(V));
    position_ += sizeof(V);
    return v;
  }
  std::string_view text(const char* what) {
    const std::uint32_t n = raw<std::uint32_t>(what);
    need(n, what);
    std::string_view s = bytes_.substr(position_, n);
    position_ += n;
    return s;
  }
  template <class Matrix>
  void operator()(std::string_view name, Matrix& m) {
    using Scalar = typename Matrix::Scalar;
    header(name, is_complex_v<Scalar> ? kComplex : kReal, std::uint64_t(m.rows()), std::uint64_t(m.cols()));
    need(sizeof(Scalar) * std::size_t(m.size()), "array values");
    for (Index j = 0; j < m.cols(); ++j)
      for (Index i = 0; i < m.rows(); ++i) {
        if (write_) std::memcpy(&m(i, j), bytes_.data() + position_, sizeof(Scalar));
        position_ += sizeof(Scalar);
      }
    ++entries;
  }
  void operator()(std::string_view name, Index& count) {
    header(name, kCounter, 1, 1);
    const std::int64_t v = raw<std::int64_t>("counter value");
    if (v < 0) throw error(ssm::detail::concat("restore_state: '", name, "': expected a count >= 0, got ", v));
    if (write_) count = Index(v);
    ++entries;
  }
  std::size_t position() const { return position_; }
  std::uint32_t entries = 0;

 private:
  void need(std::size_t n, const char* what) {
    if (n > bytes_.size() - position_)
      throw error(ssm::detail::concat("restore_state: bytes: truncated: ", what, " needs ", n, " bytes at offset ",
                                      position_, ", only ", bytes_.size() - position_, " left"));
  }
  void header(std::string_view name, std::uint8_t type, std::uint64_t rows, std::uint64_t cols) {
    const std::string_view got = text("entry name");
    if (got != name)
      throw error(ssm::detail::concat("restore_state: entry ", entries, ": expected '", name, "', got '", got, "'"));
    const auto got_type = raw<std::uint8_t>("entry type");
    const char* names[] = {"real", "complex", "counter"};
    if (got_type != type)
      throw error(ssm::detail::concat("restore_state: '", name, "': expected a ", names[type], " entry, got type ",
                                      int(got_type)));
    const auto r = raw<std::uint64_t>("rows"), c = raw<std::uint64_t>("cols");
    if (r != rows || c != cols)
      throw error(ssm::detail::concat("restore_state: '", name, "': expected shape ", rows, " x ", cols, ", got ", r,
                                      " x ", c, " (a state of another size)"));
  }

  std::string_view bytes_;
  std::size_t position_;
  bool write_;
};

}  // namespace detail

/// The bytes of `state` (see the file comment for the format).
template <class State>
std::string save_state(const State& state) {
  static_assert(std::is_same_v<decltype(State::kind), const char* const>, "save_state: State needs a `kind` name");
  if (!detail::host_is_little_endian()) throw error("save_state: only little-endian machines are supported");
  std::string body;
  detail::StateWriter entries(body);
  const_cast<State&>(state).visit(entries);  // visit() only reads through the writer
  std::string out;
  detail::StateWriter head(out);
  out.append(detail::kStateMagic, sizeof(detail::kStateMagic));
  head.raw(detail::kStateVersion);
  head.text(State::kind);
  head.raw(std::uint32_t(sizeof(typename State::scalar_type)));
  head.raw(entries.entries);
  out += body;
  head.raw(detail::fnv1a(out.data(), out.size()));
  return out;
}

/// Restores `state` (made by `initial_state()` of the layer to continue with) from `bytes` of
/// `save_state`. \throws ssm::error on anything that does not match (the file comment lists it); `state`
/// is then unchanged.
template <class State>
void restore_state(std::string_view bytes, State& state) {
  constexpr const char* where = "restore_state";
  if (!detail::host_is_little_endian()) throw error("restore_state: only little-endian machines are supported");
  const std::size_t minimum = sizeof(detail::kStateMagic) + 4 + 4 + 4 + 4 + 8;
  check(bytes.size() >= minimum, where, "bytes", ssm::detail::concat("at least ", minimum, " bytes (header and hash)"),
        ssm::detail::concat(bytes.size(), " bytes"));
  check(std::memcmp(bytes.data(), detail::kStateMagic, sizeof(detail::kStateMagic)) == 0, where, "bytes",
        "a saved ssm state (starting with SSMSTATE)", "other bytes");
  std::uint64_t stored_hash;
  std::memcpy(&stored_hash, bytes.data() + bytes.size() - 8, 8);
  check(detail::fnv1a(bytes.data(), bytes.size() - 8) == stored_hash, where, "bytes",
        "the hash written with them (bytes intact)", "a different hash: the bytes are corrupt or truncated");
  const std::string_view content = bytes.substr(0, bytes.size() - 8);
  for (const bool write : {false, true}) {  // check everything, then copy
    detail::StateReader in(content, sizeof(detail::kStateMagic), write);
    const auto version = in.raw<std::uint32_t>("version");
    check(version == detail::kStateVersion, where, "version", ssm::detail::concat(detail::kStateVersion),
          ssm::detail::concat(version));
    const std::string_view kind = in.text("kind");
    check(kind == State::kind, where, "kind", ssm::detail::concat("a state of ", State::kind),
          ssm::detail::concat("a state of ", kind));
    const auto scalar = in.raw<std::uint32_t>("scalar size");
    const auto expected_scalar = std::uint32_t(sizeof(typename State::scalar_type));
    check(scalar == expected_scalar, where, "scalar", expected_scalar == 4 ? "float (4 bytes)" : "double (8 bytes)",
          ssm::detail::concat(scalar, "-byte values"));
    const auto count = in.raw<std::uint32_t>("entry count");
    state.visit(in);
    check(count == in.entries, where, "entries", ssm::detail::concat(in.entries), ssm::detail::concat(count));
    check(in.position() == content.size(), where, "bytes", "nothing after the last entry",
          ssm::detail::concat(content.size() - in.position(), " more bytes"));
  }
}

}  // namespace ssm::io
