#pragma once
/// \file error.hpp
/// The one exception type of the library, and the checks that raise it.
///
/// Every error ssm raises is bad input: an argument of the wrong shape or range, or a file
/// whose content is not what it claims. So `ssm::error` derives from `std::invalid_argument`.
/// Messages name where the check happened, the argument, what was expected and what came:
///   "S4D::forward: u: expected 128 x 4 (L x H), got 128 x 3"

#include "ssm/core/config.hpp"

#include <Eigen/Core>

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

namespace ssm {

/// The exception thrown for every bad argument or malformed file.
class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

}  // namespace detail

/// Throws `ssm::error("<where>: <argument>: expected <expected>, got <actual>")` unless `ok`.
inline void check(bool ok, const char* where, const char* argument, const std::string& expected,
                  const std::string& actual) {
  if (!ok) {
    throw error(detail::concat(where, ": ", argument, ": expected ", expected, ", got ", actual));
  }
}

/// Shape as "rows x cols".
inline std::string shape_string(Eigen::Index rows, Eigen::Index cols) {
  return detail::concat(rows, " x ", cols);
}

/// Checks that `m` is exactly `rows` x `cols`; `what` describes the shape in words ("L x H").
template <class Derived>
void check_shape(const Eigen::EigenBase<Derived>& m, Eigen::Index rows, Eigen::Index cols,
                 const char* where, const char* argument, const char* what = nullptr) {
  if (m.rows() != rows || m.cols() != cols) {
    std::string expected = shape_string(rows, cols);
    if (what) expected += detail::concat(" (", what, ")");
    check(false, where, argument, expected, shape_string(m.rows(), m.cols()));
  }
}

/// Checks that a vector-like `m` has `size` entries (any orientation).
template <class Derived>
void check_size(const Eigen::EigenBase<Derived>& m, Eigen::Index size, const char* where,
                const char* argument, const char* what = nullptr) {
  if (m.size() != size || (m.rows() != 1 && m.cols() != 1 && size != 0)) {
    std::string expected = detail::concat("a vector of ", size);
    if (what) expected += detail::concat(" (", what, ")");
    check(false, where, argument, expected, shape_string(m.rows(), m.cols()));
  }
}

/// Checks that every entry of `m` is finite (real and imaginary parts).
template <class Derived>
void check_finite(const Eigen::DenseBase<Derived>& m, const char* where, const char* argument) {
  using std::isfinite;
  for (Eigen::Index j = 0; j < m.cols(); ++j) {
    for (Eigen::Index i = 0; i < m.rows(); ++i) {
      const auto v = m(i, j);
      bool finite;
      if constexpr (Eigen::NumTraits<typename Derived::Scalar>::IsComplex) {
        finite = isfinite(v.real()) && isfinite(v.imag());
      } else {
        finite = isfinite(static_cast<double>(v));
      }
      if (!finite) {
        check(false, where, argument, "finite values",
              detail::concat("a non-finite value at (", i, ", ", j, ")"));
      }
    }
  }
}

/// Checks `value > 0` and finite.
template <class T>
void check_positive(T value, const char* where, const char* argument) {
  check(std::isfinite(static_cast<double>(value)) && value > 0, where, argument, "a finite value > 0",
        detail::concat(value));
}

/// Checks that every entry of a real `m` is finite and > 0.
template <class Derived>
void check_all_positive(const Eigen::DenseBase<Derived>& m, const char* where, const char* argument) {
  for (Eigen::Index j = 0; j < m.cols(); ++j) {
    for (Eigen::Index i = 0; i < m.rows(); ++i) {
      const double v = static_cast<double>(m(i, j));
      if (!(std::isfinite(v) && v > 0)) {
        check(false, where, argument, "finite values > 0",
              detail::concat(v, " at (", i, ", ", j, ")"));
      }
    }
  }
}

}  // namespace ssm
