#pragma once
/// \file weight_matrix.hpp
/// A large weight matrix W (M x K, PyTorch's out x in) kept in one of four storage formats, and the
/// products a layer needs from it, each accumulated in the layer's scalar T:
///
///   format | bytes per weight        | what is stored
///   full   | sizeof(T) (4 for float) | W itself (an Eigen matrix, column-major)
///   bf16   | 2                       | bfloat16(W), row-major
///   f16    | 2                       | IEEE half(W), row-major
///   q8     | 1 + 4/32 = 1.125        | per row, blocks of 32 weights along k: q = round(w / s) in
///          |                         | [-127, 127] with s = max |w| / 127 of the block (a float)
///
/// bf16 and f16 round each weight to nearest even once, when the matrix is encoded (so a checkpoint
/// stored in that format is kept exactly). q8 rounds w to a multiple of its block's s: the error of a
/// weight is at most s / 2 = max |w| / 254 of its block.
///
/// Products (decoded weights times T values; sums in T):
///   multiply(x, y):            y = W x              x: K, y: M (one token: matrix-vector, memory bound)
///   multiply_rows(X, Y):       Y = X W^T            X: L x K, Y: L x M (a sequence: matrix-matrix)
///   multiply_columns(X, Y):    Y = W X              X: K x n, Y: M x n
///   multiply_streams(X, Y, b): Y = X W^T + b        X: B x K, small B (a batched decoding step)
/// For `full` these are Eigen's products (and the packed kernel of core/panel_matrix.hpp for the batched
/// step), exactly what the layers computed before the other formats existed. For the compact formats the
/// matrix-vector product runs the kernels of detail/weight_kernels.hpp, and the matrix-matrix products
/// decode W a block of rows at a time (about 128 KiB) into T and multiply with Eigen, so that a prompt
/// runs at GEMM speed without a decoded copy of W.

#include "ssm/core/error.hpp"
#include "ssm/core/number_formats.hpp"
#include "ssm/core/panel_matrix.hpp"
#include "ssm/core/parallel.hpp"
#include "ssm/core/types.hpp"
#include "ssm/detail/weight_kernels.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ssm {

/// How a large weight matrix is stored (see core/weight_matrix.hpp).
enum class WeightFormat {
  full,  ///< the layer's scalar (F32 for float layers, F64 for double)
  bf16,  ///< bfloat16
  f16,   ///< IEEE half
  q8,    ///< int8 in blocks of 32 weights, one float scale per block
};

/// "full", "bf16", "f16" or "q8".
inline const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::full: return "full";
    case WeightFormat::bf16: return "bf16";
    case WeightFormat::f16: return "f16";
    case WeightFormat::q8: return "q8";
  }
  return "?";
}

/// The format named `text`: "bf16", "f16", "q8", or "full" (also spelled "f32" or "f64": the model's own
/// scalar). \throws ssm::error naming `argument` otherwise.
inline WeightFormat parse_weight_format(const std::string& text, const char* where, const char* argument) {
  if (text == "full" || text == "f32" || text == "f64") return WeightFormat::full;
  if (text == "bf16") return WeightFormat::bf16;
  if (text == "f16") return WeightFormat::f16;
  if (text == "q8") return WeightFormat::q8;
  check(false, where, argument, "one of f32, bf16, f16, q8 (or full / f64: the model's own scalar)", "\"" + text + "\"");
  return WeightFormat::full;
}

template <class T>
class WeightMatrix {
 public:
  WeightMatrix() = default;

  /// W kept as it is (format full; no copy when W is moved in).
  explicit WeightMatrix(MatrixX<T> W) : rows_(W.rows()), cols_(W.cols()), full_(std::move(W)) {}

  /// A rows x cols matrix of zeros in `format`, to be filled with `set_rows`.
  WeightMatrix(Index rows, Index cols, WeightFormat format) : format_(format), rows_(rows), cols_(cols) {
    check(rows >= 0 && cols >= 0, "WeightMatrix", "shape", "rows, cols >= 0", shape_string(rows, cols));
    switch (format) {
      case WeightFormat::full: full_ = MatrixX<T>::Zero(rows, cols); break;
      case WeightFormat::bf16:
      case WeightFormat::f16: halves_.assign(std::size_t(rows * cols), 0); break;
      case WeightFormat::q8:
        quants_.assign(std::size_t(rows * q8_stride()), 0);
        scales_.assign(std::size_t(rows * q8_blocks()), 0.0f);
        break;
    }
  }

  /// W encoded in `format` (for full: a copy of W).
  static WeightMatrix encode(const Eigen::Ref<const MatrixX<T>>& W, WeightFormat format) {
    if (format == WeightFormat::full) return WeightMatrix(MatrixX<T>(W));
    WeightMatrix m(W.rows(), W.cols(), format);
    const RowMatrixX<T> rows = W;
    m.set_rows(0, W.rows(), rows.data());
    return m;
  }

  /// W in `format`, taking W's memory: for full W is moved in; otherwise it is encoded and W is released
  /// (so that a layer converting its weights holds one copy, not two).
  static WeightMatrix take(MatrixX<T>&& W, WeightFormat format) {
    if (format == WeightFormat::full) return WeightMatrix(std::move(W));
    WeightMatrix m = encode(W, format);
    W = MatrixX<T>();
    return m;
  }

  /// Encodes rows [first, first + count) from `values` (count x cols, row-major).
  /// \throws ssm::error when the rows are not inside the matrix.
  void set_rows(Index first, Index count, const T* values) {
    check(first >= 0 && count >= 0 && first + count <= rows_, "WeightMatrix::set_rows", "rows",
          detail::concat("a range inside [0, ", rows_, ")"), detail::concat("[", first, ", ", first + count, ")"));
    const Index K = cols_;
    panels_ = detail::LazyPanels<T>();  // a packed copy made before would be stale
    switch (format_) {
      case WeightFormat::full:
        full_.middleRows(first, count) = Eigen::Map<const RowMatrixX<T>>(values, count, K);
        break;
      case WeightFormat::bf16:
      case WeightFormat::f16: {
        const bool bf = format_ == WeightFormat::bf16;
        std::uint16_t* out = halves_.data() + first * K;
        for (Index i = 0; i < count * K; ++i)
          out[i] = bf ? float_to_bfloat16(float(values[i])) : float_to_half(float(values[i]));
        break;
      }
      case WeightFormat::q8:
        for (Index r = 0; r < count; ++r) quantise_row(first + r, values + r * K);
        break;
    }
  }

  WeightFormat format() const { return format_; }
  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  /// Bytes of the stored weights (and scales).
  std::size_t bytes() const {
    return std::size_t(full_.size()) * sizeof(T) + halves_.size() * 2 + quants_.size() + scales_.size() * sizeof(float);
  }

  /// The matrix the format holds, decoded to T (for full, W itself).
  MatrixX<T> decode() const {
    if (format_ == WeightFormat::full) return full_;
    RowMatrixX<T> out(rows_, cols_);
    decode_rows(0, rows_, out.data());
    return out;
  }

  /// Row r decoded into `out` (cols values): an embedding lookup. Allocates nothing.
  void decode_row(Index r, Eigen::Ref<VectorX<T>> out) const {
    if (format_ == WeightFormat::full) out = full_.row(r).transpose();
    else decode_rows(r, 1, out.data());
  }

  /// y = W x (x: cols, y: rows, both contiguous and not overlapping). Allocates nothing.
  void multiply(const Eigen::Ref<const VectorX<T>>& x, Eigen::Ref<VectorX<T>> y) const {
    switch (format_) {
      case WeightFormat::full: y.noalias() = full_ * x; break;
      case WeightFormat::bf16:
      case WeightFormat::f16:
        detail::gemv16<T>(format_ == WeightFormat::bf16, halves_.data(), rows_, cols_, x.data(), y.data());
        break;
      case WeightFormat::q8:
        detail::gemv_q8<T>(quants_.data(), scales_.data(), rows_, cols_, q8_stride(), x.data(), y.data());
        break;
    }
  }

  /// Y = X W^T: X is L x cols, Y L x rows (resized).
  template <class XDerived>
  void multiply_rows(const Eigen::MatrixBase<XDerived>& X, MatrixX<T>& Y) const {
    Y.resize(X.rows(), rows_);
    if (format_ == WeightFormat::full) {
      Y.noalias() = X * full_.transpose();
      return;
    }
    for_each_decoded_block(X.rows(), [&](Index r0, const RowMatrixX<T>& block) {
      Y.middleCols(r0, block.rows()).noalias() = X * block.transpose();
    });
  }

  /// Y = W X: X is cols x n, Y rows x n (resized).
  template <class XDerived>
  void multiply_columns(const Eigen::MatrixBase<XDerived>& X, MatrixX<T>& Y) const {
    Y.resize(rows_, X.cols());
    if (format_ == WeightFormat::full) {
      Y.noalias() = full_ * X;
      return;
    }
    for_each_decoded_block(X.cols(), [&](Index r0, const RowMatrixX<T>& block) {
      Y.middleRows(r0, block.rows()).noalias() = block * X;
    });
  }

  /// Y = X W^T + bias for the B streams of a batched step (X: B x cols, Y: B x rows, both stored with
  /// direct access; bias: rows values or empty). For full, the packed kernel of core/panel_matrix.hpp (W
  /// packed on the first call, shared by copies); otherwise blocks of decoded rows as in `multiply_rows`.
  template <class XDerived, class YDerived>
  void multiply_streams(const Eigen::MatrixBase<XDerived>& X, const Eigen::MatrixBase<YDerived>& Y_,
                        const VectorX<T>& bias) const {
    if (format_ == WeightFormat::full) {
      panels_.get(full_).multiply_transposed(X, Y_, bias);
      return;
    }
    auto& Y = const_cast<Eigen::MatrixBase<YDerived>&>(Y_);  // Eigen's idiom for writing through a block
    check(X.cols() == cols_ && Y.rows() == X.rows() && Y.cols() == rows_, "WeightMatrix::multiply_streams", "X, Y",
          detail::concat("B x ", cols_, " and B x ", rows_), shape_string(X.rows(), X.cols()) + ", " + shape_string(Y.rows(), Y.cols()));
    for_each_decoded_block(X.rows(), [&](Index r0, const RowMatrixX<T>& block) {
      Y.middleCols(r0, block.rows()).noalias() = X * block.transpose();
    });
    if (bias.size()) Y.rowwise() += bias.transpose();
  }

 private:
  Index q8_blocks() const { return (cols_ + detail::kQ8Block - 1) / detail::kQ8Block; }
  Index q8_stride() const { return q8_blocks() * detail::kQ8Block; }

  /// Row r's q8 encoding from its cols values w: per block, s = max |w| / 127 (0 for an all-zero
  /// block) and q = round(w / s) (half away from zero), in [-127, 127].
  void quantise_row(Index r, const T* w) {
    const Index K = cols_, stride = q8_stride();
    for (Index j = 0; j < q8_blocks(); ++j) {
      const Index k0 = j * detail::kQ8Block, n = std::min(detail::kQ8Block, K - k0);
      double amax = 0;
      for (Index i = 0; i < n; ++i) amax = std::max(amax, std::abs(double(w[k0 + i])));
      check(std::isfinite(amax), "WeightMatrix", "weights", "finite values (q8 cannot store inf or NaN)",
            detail::concat("a non-finite value in row ", r));
      const float s = float(amax / 127);
      scales_[std::size_t(r * q8_blocks() + j)] = s;
      std::int8_t* q = quants_.data() + r * stride + k0;
      for (Index i = 0; i < n; ++i) {
        const double v = s > 0 ? std::round(double(w[k0 + i]) / double(s)) : 0.0;
        q[i] = std::int8_t(std::clamp(v, -127.0, 127.0));
      }
    }
  }

  /// Rows [first, first + count) decoded into `out` (count x cols, row-major).
  void decode_rows(Index first, Index count, T* out) const {
    const Index K = cols_;
    switch (format_) {
      case WeightFormat::full:
        Eigen::Map<RowMatrixX<T>>(out, count, K) = full_.middleRows(first, count);
        break;
      case WeightFormat::bf16:
        for (Index i = 0; i < count * K; ++i) out[i] = detail::decode_bf16<T>(halves_[std::size_t(first * K + i)]);
        break;
      case WeightFormat::f16:
        for (Index i = 0; i < count * K; ++i) out[i] = detail::decode_f16<T>(halves_[std::size_t(first * K + i)]);
        break;
      case WeightFormat::q8: {
        const Index stride = q8_stride(), blocks = q8_blocks();
        for (Index r = 0; r < count; ++r)
          for (Index k = 0; k < K; ++k)
            out[r * K + k] = T(quants_[std::size_t((first + r) * stride + k)]) *
                             T(scales_[std::size_t((first + r) * blocks + k / detail::kQ8Block)]);
        break;
      }
    }
  }

  /// Calls f(r0, block) for blocks of consecutive rows of W decoded to T (row-major, about 128 KiB each),
  /// in parallel over the blocks when the product (with `n` right-hand columns) is large; f must write
  /// only its own rows' outputs.
  template <class F>
  void for_each_decoded_block(Index n, const F& f) const {
    if (rows_ == 0) return;
    const Index per_block = std::clamp<Index>(Index(131072 / sizeof(T)) / std::max<Index>(cols_, 1), 8, rows_);
    const Index blocks = (rows_ + per_block - 1) / per_block;
    const double flops = 2.0 * double(n) * double(rows_) * double(cols_);
    const int team = detail::team_size(flops >= 4e6, blocks);
#if defined(_OPENMP)
#pragma omp parallel num_threads(team) if (team > 1)
#endif
    {
      RowMatrixX<T> block(per_block, cols_);
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (Index b = 0; b < blocks; ++b) {
        const Index r0 = b * per_block, count = std::min(per_block, rows_ - r0);
        if (count != block.rows()) block.resize(count, cols_);
        decode_rows(r0, count, block.data());
        f(r0, block);
      }
    }
  }

  WeightFormat format_ = WeightFormat::full;
  Index rows_ = 0, cols_ = 0;
  MatrixX<T> full_;                    ///< full: W.
  std::vector<std::uint16_t> halves_;  ///< bf16 / f16: rows x cols, row-major.
  std::vector<std::int8_t> quants_;    ///< q8: rows x q8_stride(), row-major, zero past cols.
  std::vector<float> scales_;          ///< q8: rows x q8_blocks(), row-major.
  /// full: W packed for `multiply_streams`, on its first call.
  detail::LazyPanels<T> panels_;
};

}  // namespace ssm
