#pragma once
/// \file panel_matrix.hpp
/// A weight matrix packed for products with a few input rows at a time: Y = X W^T + bias, with W
/// (M x K, the PyTorch layout out x in), X (B x K, B small: the streams of a batched decoding step) and
/// Y (B x M).
///
/// Why: at B = 1 such a product is bound by reading W; at B = 4 .. 64 it should cost little more, since
/// each weight read serves B multiply-adds. Eigen's general product does not get there on these shapes
/// (it re-packs W on every call, and a B x K times K x M product with small B leaves its kernel starved:
/// measured at the mamba-130m head, 50280 x 768, B = 4 costs 3.8x and B = 16 4.5x the B = 1 time). So W
/// is packed once, here, and a register-blocked kernel reads it in order.
///
/// Layout: the rows of W in panels of P = 4 SIMD packets (P = 64 floats or 32 doubles with AVX-512, 32 / 16
/// with AVX, 16 / 8 with SSE; the widest packets the build uses, Eigen's `packet_traits`). Panel p holds
/// rows p P .. p P + P - 1, stored k-major: its K columns one after the other, P contiguous values each,
/// so that the kernel reads each panel as one sequential stream. The last panel is padded with zero rows.
/// Size: ceil(M / P) P K scalars, at most (P - 1) K more than W.
///
/// Kernel: for one panel and a block of NB streams (NB = 6 with 32 vector registers, 2 with 16), the
/// 4 NB packets of partial sums stay in registers while k runs over K: per k, 4 packet loads of W,
/// NB broadcasts of X and 4 NB fused multiply-adds. The panel (P K scalars: 192 KiB at K = 768 in float)
/// stays in the L2 cache while the next stream blocks reuse it, so W comes from memory once per call.
///
/// Arithmetic: every output is bias[m] + (the sum over k = 0 .. K - 1, in that order, of W(m, k) X(b, k),
/// accumulated from zero by multiply-adds, fused where the build has FMA), whatever B is and wherever
/// stream b sits in the batch: a stream's outputs do not depend on the other streams.

#include "ssm/core/config.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/parallel.hpp"
#include "ssm/core/types.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cstddef>
#include <memory>
#include <mutex>
#include <type_traits>

#if defined(__clang__)
#define SSM_UNROLL(n) _Pragma("unroll")
#elif defined(__GNUC__)
#define SSM_UNROLL_STR(x) #x
#define SSM_UNROLL(n) _Pragma(SSM_UNROLL_STR(GCC unroll n))
#else
#define SSM_UNROLL(n)
#endif

namespace ssm {

template <class T>
class PanelMatrix {
  using Packet = typename Eigen::internal::packet_traits<T>::type;

 public:
  /// Scalars per packet (the build's widest vectors for T).
  static constexpr Index lanes = Eigen::internal::packet_traits<T>::size;
  /// Rows per panel.
  static constexpr Index panel_rows = 4 * lanes;
  /// Streams whose partial sums the kernel keeps in registers at once.
  /// (Eigen's register count may be an expression with sizeof, so it is read here, not in #if.)
  static constexpr int stream_block = int(EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS) >= 32 ? 6 : 2;

  PanelMatrix() = default;

  /// Packs W (M x K).
  explicit PanelMatrix(const Eigen::Ref<const MatrixX<T>>& W)
      : rows_(W.rows()), cols_(W.cols()), panels_((W.rows() + panel_rows - 1) / panel_rows),
        data_(panels_ * panel_rows * cols_ + prefetch_distance) {
    data_.setZero();  // the padding rows and the prefetch slack past the last panel
    for (Index p = 0; p < panels_; ++p) {
      const Index m0 = p * panel_rows, valid = std::min(panel_rows, rows_ - m0);
      T* panel = data_.data() + p * panel_rows * cols_;
      for (Index k = 0; k < cols_; ++k)
        for (Index r = 0; r < valid; ++r) panel[k * panel_rows + r] = W(m0 + r, k);
    }
  }

  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  /// Bytes of the packed weights.
  std::size_t bytes() const { return std::size_t(data_.size()) * sizeof(T); }

  /// Y = X W^T + bias. X: B x K; Y: B x M; both with direct access (matrices, blocks, maps, of either
  /// storage order and any strides), and not overlapping (Y is written panel by panel while X is still
  /// read); bias: M values, or empty for none. Panels are spread over the threads when the product is
  /// large enough to pay for waking them. Allocates nothing.
  /// \throws ssm::error on shapes that do not fit.
  template <class XDerived, class YDerived>
  void multiply_transposed(const Eigen::MatrixBase<XDerived>& X, const Eigen::MatrixBase<YDerived>& Y_,
                           const VectorX<T>& bias) const {
    static_assert(bool(XDerived::Flags & Eigen::DirectAccessBit) && bool(YDerived::Flags & Eigen::DirectAccessBit),
                  "PanelMatrix::multiply_transposed: X and Y must be stored (matrices, blocks or maps), not expressions");
    static_assert(std::is_same_v<typename XDerived::Scalar, T> && std::is_same_v<typename YDerived::Scalar, T>,
                  "PanelMatrix::multiply_transposed: X and Y must have the matrix's scalar type");
    constexpr const char* where = "PanelMatrix::multiply_transposed";
    auto& Y = const_cast<Eigen::MatrixBase<YDerived>&>(Y_);  // Eigen's idiom for writing through a block
    check(X.cols() == cols_, where, "X", detail::concat("B x ", cols_, " (B x K)"), shape_string(X.rows(), X.cols()));
    check(Y.rows() == X.rows() && Y.cols() == rows_, where, "Y", detail::concat(X.rows(), " x ", rows_, " (B x M)"),
          shape_string(Y.rows(), Y.cols()));
    check(bias.size() == 0 || bias.size() == rows_, where, "bias", detail::concat(rows_, " values or none"),
          detail::concat(bias.size()));
    multiply(X.rows(), {X.derived().data(), X.rowStride(), X.colStride()},
             {Y.derived().data(), Y.rowStride(), Y.colStride()}, bias.size() ? bias.data() : nullptr);
  }

 private:
  /// A matrix operand by its first element and its row and column strides, in scalars.
  template <class S>
  struct Operand {
    S* data;
    Index row_stride, col_stride;
  };

  /// The product for B streams, operands checked: one function whatever the operands' types, so that
  /// the kernels are compiled once per scalar type.
  SSM_NOINLINE void multiply(Index B, const Operand<const T>& x, const Operand<T>& y, const T* bias) const {
    if (B == 0 || rows_ == 0) return;
    const double flops = 2.0 * double(B) * double(rows_) * double(cols_);
    const int team = detail::team_size(flops >= 4e6, panels_);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (Index p = 0; p < panels_; ++p) multiply_panel(p, B, x, y, bias);
  }

  void multiply_panel(Index p, Index B, const Operand<const T>& x, const Operand<T>& y, const T* bias) const {
    // Stream blocks of near-equal size, none larger than stream_block.
    const Index blocks = (B + stream_block - 1) / stream_block;
    for (Index s = 0, b0 = 0; s < blocks; ++s) {
      const Index nb = (B - b0) / (blocks - s);
      // The first block streams the panel from memory, prefetching a little ahead in it; the later
      // blocks find it in the cache and prefetch the next panel meanwhile, so that reading the weights
      // overlaps the multiply-adds instead of alternating with them.
      const T* panel = data_.data() + p * panel_rows * cols_;
      const T* ahead = s == 0 ? panel + prefetch_distance : panel + panel_rows * cols_;
      const bool ahead_useful = s == 0 || p + 1 < panels_;
      const T* prefetch = ahead_useful ? ahead : nullptr;
      if constexpr (stream_block >= 6) {
        switch (nb) {
          case 1: kernel<1>(p, b0, x, y, bias, prefetch); break;
          case 2: kernel<2>(p, b0, x, y, bias, prefetch); break;
          case 3: kernel<3>(p, b0, x, y, bias, prefetch); break;
          case 4: kernel<4>(p, b0, x, y, bias, prefetch); break;
          case 5: kernel<5>(p, b0, x, y, bias, prefetch); break;
          default: kernel<6>(p, b0, x, y, bias, prefetch); break;
        }
      } else {
        if (nb == 1) kernel<1>(p, b0, x, y, bias, prefetch);
        else kernel<2>(p, b0, x, y, bias, prefetch);
      }
      b0 += nb;
    }
  }

  /// Streams b0 .. b0 + NB - 1 against panel p: the 4 NB packets of sums stay in registers over all of
  /// K; then the bias is added and the panel's valid rows are written.
  /// `ahead`, when not null, is prefetched alongside: one cache line of it per packet of W read.
  template <int NB>
  void kernel(Index p, Index b0, const Operand<const T>& x, const Operand<T>& y, const T* bias, const T* ahead) const {
    using namespace Eigen::internal;
    const T* w = data_.data() + p * panel_rows * cols_;
    const T* xrow[NB];
    for (int j = 0; j < NB; ++j) xrow[j] = x.data + (b0 + j) * x.row_stride;
    // The loops over j and q are unrolled before GCC decides what lives in registers; otherwise it keeps
    // a copy of acc on the stack and stores to it on every k.
    Packet acc[NB][4];
    SSM_UNROLL(8)
    for (int j = 0; j < NB; ++j) {
      acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = pset1<Packet>(T(0));
    }
    for (Index k = 0; k < cols_; ++k, w += panel_rows) {
      if (ahead) {
        const T* a = ahead + k * panel_rows;
        prefetch_line(a);
        prefetch_line(a + lanes);
        prefetch_line(a + 2 * lanes);
        prefetch_line(a + 3 * lanes);
      }
      const Packet w0 = pload<Packet>(w), w1 = pload<Packet>(w + lanes), w2 = pload<Packet>(w + 2 * lanes),
                   w3 = pload<Packet>(w + 3 * lanes);
      const Index xk = k * x.col_stride;
      SSM_UNROLL(8)
      for (int j = 0; j < NB; ++j) {
        const Packet xj = pset1<Packet>(xrow[j][xk]);
        acc[j][0] = pmadd(w0, xj, acc[j][0]);
        acc[j][1] = pmadd(w1, xj, acc[j][1]);
        acc[j][2] = pmadd(w2, xj, acc[j][2]);
        acc[j][3] = pmadd(w3, xj, acc[j][3]);
      }
    }
    const Index m0 = p * panel_rows, valid = std::min(panel_rows, rows_ - m0);
    EIGEN_ALIGN_MAX T sums[4 * lanes];
    SSM_UNROLL(8)
    for (int j = 0; j < NB; ++j) {
      pstore(sums, acc[j][0]);
      pstore(sums + lanes, acc[j][1]);
      pstore(sums + 2 * lanes, acc[j][2]);
      pstore(sums + 3 * lanes, acc[j][3]);
      T* out = y.data + (b0 + j) * y.row_stride + m0 * y.col_stride;
      for (Index r = 0; r < valid; ++r) out[r * y.col_stride] = bias ? sums[r] + bias[m0 + r] : sums[r];
    }
  }

  static void prefetch_line(const T* address) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(address, 0, 2);
#else
    (void)address;
#endif
  }

  /// How far ahead of the packet it reads the first stream block prefetches, in scalars (4 KiB).
  static constexpr Index prefetch_distance = 4096 / sizeof(T);

  Index rows_ = 0, cols_ = 0, panels_ = 0;
  /// ceil(M / P) panels of P K scalars, then prefetch_distance zeros (so that every address prefetched
  /// lies inside the allocation); Eigen's allocator aligns it for packet loads.
  Eigen::Matrix<T, Eigen::Dynamic, 1> data_;
};

SSM_EXTERN_TEMPLATE_FLOAT_DOUBLE(PanelMatrix)  // see SSM_NOINLINE in ssm/core/config.hpp

namespace detail {

/// A PanelMatrix packed from a weight on first use. The layers keep one per large weight for their
/// batched step: a model that is never stepped in batches never pays for the packed copy (about the
/// weight's own size). Copies of the owner share it, which is right because a layer's weights do not
/// change after construction. `get` is thread-safe: concurrent first calls pack once.
template <class T>
class LazyPanels {
 public:
  /// The packed form of W; W must be the same matrix on every call.
  const PanelMatrix<T>& get(const MatrixX<T>& W) const {
    std::call_once(slot_->once, [&] { slot_->panels = PanelMatrix<T>(W); });
    return slot_->panels;
  }

 private:
  struct Slot {
    std::once_flag once;
    PanelMatrix<T> panels;
  };
  std::shared_ptr<Slot> slot_ = std::make_shared<Slot>();
};

}  // namespace detail

}  // namespace ssm

#undef SSM_UNROLL
#undef SSM_UNROLL_STR
