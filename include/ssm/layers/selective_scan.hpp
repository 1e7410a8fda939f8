#pragma once
/// \file selective_scan.hpp
/// The selective scan of Mamba (S6): a diagonal linear recurrence whose step size, input and
/// output matrices change with every time step.
///
/// For every channel d (of D) and step t (of L), with a state x_t of N entries:
///
///     delta'_t = softplus(delta_t + delta_bias_d)      (or delta_t + delta_bias_d without softplus)
///     x_t      = exp(delta'_t A_d) .* x_{t-1} + delta'_t u_t B_t          (ZOH for A, Euler for B)
///     y_t      = C_t . x_t   (2 Re(C_t . x_t) for complex A)  +  D_d u_t
///     out_t    = y_t * silu(z_t)                                          (when a gate z is given)
///
/// This is `selective_scan_ref` of state-spaces/mamba with every option, plus an initial state.
/// softplus(v) = log(1 + e^v), and v itself for v > 20 (PyTorch's threshold); silu(v) = v / (1 + e^-v).
///
/// A is real (D x N), or complex (D x N with one mode of each conjugate pair, which is why the
/// output takes 2 Re). B and C are each one of (see `ScanMatrix`):
///  - constant:  D x N, one row per channel, the same at every step;
///  - per step:  L x N, row t shared by all channels at step t;
///  - grouped:   L x (G N), channel d reads the N columns of group g = d / (D / G).
/// For complex A, B and C have complex entries (the reference packs them as (re, im) pairs along
/// time; here they are simply complex).
///
/// Layout follows the library: u, delta, z and out are L x D (rows are time); the states are
/// D x N (channel rows, as the reference's (batch, D, N)).
///
/// Ownership: B, C and the options (`SelectiveScanOptions`) are views (`ScanView`) of the caller's
/// matrices, never copies; they must outlive the call. Operands laid out as the kernel reads them are
/// read in place (see detail/scan_operands.hpp), so `selective_scan_into` on such operands, with
/// real A, allocates nothing: that is how the Mamba block's step runs.
///
/// How it runs (real A): channels go in SIMD lanes, 16 floats or 8 doubles at a time, so that every
/// operation of the recurrence is a full-width vector operation with no horizontal sums
/// (detail/scan_lanes.hpp); exp, softplus and the gate are branch-free polynomials
/// (detail/fast_math.hpp, exp < 3 ulp). On x86-64 with GCC or Clang the kernel is compiled for the
/// baseline, AVX2 + FMA and AVX-512 and chosen at run time (detail/scan_dispatch.hpp); the AVX-512
/// build runs fp32 with lane-shared B and C (Mamba's case) through hand-written intrinsics
/// (scan_avx512.hpp). Measured with GCC 12, fp32, D = 1536, N = 16, L = 2048, one thread of
/// an AMD EPYC (Zen 5) VM: 0.34 ns per channel x state x step with the AVX-512 intrinsics (0.45 ns
/// auto-vectorised), 1.9 ns AVX2, 4.5 ns SSE2. A single fp32 step (L = 1, a layer's step) with A and the
/// state laid out with the channels contiguous for each state (D x N column-major, as Mamba keeps them)
/// runs a kernel of its own (detail/scan_step_avx512.hpp): the same bits, 8.7x faster than the lane kernel
/// over one step (bench/RESULTS.md). Lane groups are spread across threads with OpenMP when
/// `_OPENMP` is defined. Complex A runs one channel at a time (detail/complex_scan.hpp: Eigen's exp,
/// sin and cos, on split real and imaginary copies).
///
/// Example:
/// \code
///   ssm::SelectiveScanOptions<float> options;
///   options.D = D;  options.z = z;  options.delta_bias = bias;  options.delta_softplus = true;   // views
///   auto r = ssm::selective_scan(u, delta, A, ssm::ScanMatrix<float>::per_step(B),
///                                ssm::ScanMatrix<float>::per_step(C), options);
///   // r.out: L x D, r.last_state: D x N
/// \endcode

#include "ssm/core/activations.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/detail/complex_scan.hpp"
#include "ssm/detail/scan_dispatch.hpp"
#include "ssm/detail/scan_operands.hpp"

#include <Eigen/Core>

#include <cmath>
#include <complex>
#include <type_traits>

namespace ssm {

/// A read-only view of a matrix or vector that the caller owns: rows() x cols() elements of type E,
/// element (i, j) at data()[i row_stride() + j col_stride()]. An empty view (size 0) means "not given".
///
/// Made implicitly from any Eigen object with storage (a matrix, a block, a row or column, a Map, a
/// Ref, the transpose of any of these): it never copies, so the object must outlive the scan that
/// reads the view. Refused at compile time, because the view would dangle or read something else: an
/// expression without storage (`x * W`, `m.cast<float>()`: evaluate it into a matrix first), a
/// temporary matrix (it dies before the scan runs), and another element type (no silent conversion).
template <class E>
class ScanView {
 public:
  /// The empty view.
  ScanView() = default;

  /// rows x cols elements, (i, j) at data[i row_stride + j col_stride].
  ScanView(const E* data, Index rows, Index cols, Index row_stride, Index col_stride)
      : data_(data), rows_(rows), cols_(cols), row_stride_(row_stride), col_stride_(col_stride) {}

  /// A view of `m`, which must have storage and element type E.
  template <class Derived>
  ScanView(const Eigen::DenseBase<Derived>& m) {  // NOLINT: implicit, like Eigen::Ref
    static_assert(std::is_same_v<typename Derived::Scalar, E>,
                  "ScanView: the matrix must have the scan's element type (no silent conversion)");
    static_assert(bool(int(Derived::Flags) & Eigen::DirectAccessBit),
                  "ScanView: a view needs storage; evaluate the expression into a matrix first (and keep it "
                  "alive while the scan runs)");
    if constexpr (std::is_same_v<typename Derived::Scalar, E> && bool(int(Derived::Flags) & Eigen::DirectAccessBit)) {
      const Derived& d = m.derived();
      data_ = d.data();
      rows_ = d.rows();
      cols_ = d.cols();
      row_stride_ = Derived::IsRowMajor ? d.outerStride() : d.innerStride();
      col_stride_ = Derived::IsRowMajor ? d.innerStride() : d.outerStride();
    }
  }

  /// A temporary matrix would be destroyed before the scan reads it.
  template <class Derived>
  ScanView(Eigen::PlainObjectBase<Derived>&&) = delete;

  const E* data() const { return data_; }
  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  Index size() const { return rows_ * cols_; }
  bool empty() const { return size() == 0; }
  Index row_stride() const { return row_stride_; }
  Index col_stride() const { return col_stride_; }
  const E& operator()(Index i, Index j) const { return data_[i * row_stride_ + j * col_stride_]; }

  /// For a vector (one column or one row): the stride between consecutive elements, and element i.
  Index stride() const { return cols_ == 1 ? row_stride_ : col_stride_; }
  const E& operator[](Index i) const { return data_[i * stride()]; }

  /// The view as an Eigen map (to read it with Eigen expressions; no copy).
  Eigen::Map<const MatrixX<E>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>> map() const {
    return {data_, rows_, cols_, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(col_stride_, row_stride_)};
  }

 private:
  const E* data_ = nullptr;
  Index rows_ = 0, cols_ = 0, row_stride_ = 0, col_stride_ = 0;
};

/// B or C of the selective scan: a view of its values and how they vary over channels and steps.
/// `E` is the real scalar (real A) or `std::complex<Scalar>` (complex A).
template <class E>
struct ScanMatrix {
  /// How the matrix varies.
  enum class Kind {
    constant,  ///< values is D x N: row d is channel d's vector, the same at every step.
    per_step,  ///< values is L x N: row t is the vector of step t, shared by every channel.
    grouped    ///< values is L x (G N): channel d uses columns [g N, (g + 1) N) with g = d / (D / G).
  };

  Kind kind = Kind::constant;
  ScanView<E> values;  ///< See `Kind` for the shape. A view: the caller keeps the matrix alive.
  Index groups = 1;    ///< G; 1 unless grouped.

  /// Time-invariant B or C: D x N, one row per channel.
  static ScanMatrix constant(ScanView<E> values) { return {Kind::constant, values, 1}; }
  /// Per-step B or C: L x N, row t at step t, for all channels.
  static ScanMatrix per_step(ScanView<E> values) { return {Kind::per_step, values, 1}; }
  /// Per-step B or C in G groups: L x (G N); group g (columns g N .. g N + N - 1) serves channels
  /// g D/G .. (g + 1) D/G - 1.
  static ScanMatrix grouped(ScanView<E> values, Index groups) { return {Kind::grouped, values, groups}; }
};

/// The optional inputs of the selective scan, as views of the caller's data (which must outlive the
/// call). Empty views mean "not given".
template <class Scalar, class E = Scalar>
struct SelectiveScanOptions {
  ScanView<Scalar> D;           ///< Skip connection, size D: y += D_d u. Empty: none.
  ScanView<Scalar> z;           ///< Gate, L x D: out = y * silu(z). Empty: no gate.
  ScanView<Scalar> delta_bias;  ///< Added to delta before softplus, size D. Empty: none.
  bool delta_softplus = false;  ///< Apply softplus to delta (+ bias).
  /// x_0, D x N (channel rows), for `selective_scan`. Empty: zero. (`selective_scan_into` takes the
  /// state as an argument instead and refuses this.)
  ScanView<E> initial_state;
};

/// What the selective scan returns.
template <class Scalar, class E = Scalar>
struct SelectiveScanResult {
  Sequence<Scalar> out;  ///< L x D.
  MatrixX<E> last_state; ///< x_L, D x N (channel rows), the state to continue from.
};

namespace detail {
template <class T>
struct scan_identity {
  using type = T;
};
}  // namespace detail

/// The real scalar of a scan over element type E (E itself, or the value type of a complex E).
template <class E>
using scan_real_t = typename Eigen::NumTraits<E>::Real;

/// How the scan takes A: any D x N matrix of E, strided; an expression is evaluated once.
template <class E>
using ScanA = Eigen::Ref<const MatrixX<E>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;

/// The selective scan (see the file comment for the math) written into the caller's `out` and
/// `state`: on entry `state` holds x_0, on return x_L.
///
/// \param u       L x D input (a block or a map binds in place; an expression is evaluated once).
/// \param delta   L x D step sizes (before `delta_bias` and softplus).
/// \param A       D x N, real or complex (one mode of each conjugate pair; the output is then 2 Re(C x)).
///                Read in place when each channel's N values are contiguous (e.g. a Map of an N x D
///                matrix with strides (outer 1, inner N)); otherwise copied, transposed, for the call.
/// \param B, C    `ScanMatrix` views over A's element type.
/// \param options D skip, gate z, delta_bias, delta_softplus (views); initial_state must be empty.
/// \param out     L x D, written.
/// \param state   D x N, any strides: x_0 in, x_L out.
/// With real A and operands in the kernel's layout (detail/scan_operands.hpp) nothing is allocated.
/// \throws ssm::error naming the argument when a shape does not fit (the message is built only then).
template <class E>
void selective_scan_into(const Eigen::Ref<const Sequence<scan_real_t<E>>>& u,
                         const Eigen::Ref<const Sequence<scan_real_t<E>>>& delta,
                         const typename detail::scan_identity<ScanA<E>>::type& A, const ScanMatrix<E>& B,
                         const ScanMatrix<E>& C,
                         const typename detail::scan_identity<SelectiveScanOptions<scan_real_t<E>, E>>::type& options,
                         Eigen::Ref<Sequence<scan_real_t<E>>> out,
                         typename detail::scan_identity<
                             Eigen::Ref<MatrixX<E>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>>::type state) {
  using Scalar = scan_real_t<E>;
  static_assert(is_supported_scalar_v<Scalar>, "selective_scan: the scalar must be float or double");
  static_assert(std::is_same_v<E, Scalar> || std::is_same_v<E, std::complex<Scalar>>,
                "selective_scan: A must be real or complex over u's scalar type");
  constexpr bool is_complex = !std::is_same_v<E, Scalar>;
  constexpr const char* where = "selective_scan";
  using detail::concat;

  const Index L = u.rows(), D = u.cols(), N = A.cols();
  check_shape(delta, L, D, where, "delta", "L x D, as u");
  if (!(A.rows() == D && N >= 1))
    check(false, where, "A", concat("D x N with D = ", D, " (u's columns) and N >= 1"), shape_string(A.rows(), A.cols()));
  detail::check_scan_matrix(B, L, D, N, where, "B");
  detail::check_scan_matrix(C, L, D, N, where, "C");
  if (!options.D.empty()) check_size(options.D.map(), D, where, "options.D", "one per channel");
  if (!options.delta_bias.empty()) check_size(options.delta_bias.map(), D, where, "options.delta_bias", "one per channel");
  if (!options.z.empty()) check_shape(options.z.map(), L, D, where, "options.z", "L x D, as u");
  if (!options.initial_state.empty())
    check(false, where, "options.initial_state", "empty (selective_scan_into reads x_0 from its state argument)",
          shape_string(options.initial_state.rows(), options.initial_state.cols()));
  check_shape(out, L, D, where, "out", "L x D, as u");
  check_shape(state, D, N, where, "state", "D x N");
  if (L == 0) return;

  detail::ScanScratch<Scalar> scratch;  // filled only for operands the kernel cannot read in place
  if constexpr (!is_complex) {
    detail::RealScanProblem<Scalar> p;
    p.L = L;
    p.D = D;
    p.N = N;
    p.u = u.data();
    p.ld_u = u.outerStride();
    p.delta = delta.data();
    p.ld_delta = delta.outerStride();
    p.z = detail::channel_columns<Scalar>(options.z, scratch.z, p.ld_z);
    p.delta_bias = detail::contiguous_vector<Scalar>(options.delta_bias, scratch.delta_bias);
    p.skip = detail::contiguous_vector<Scalar>(options.D, scratch.skip);
    p.softplus = options.delta_softplus;
    p.A = A.data();  // any strides: the kernels gather it once per call
    p.A_ld_d = A.innerStride();
    p.A_ld_n = A.outerStride();
    p.B = detail::real_operand<Scalar>(B, D, N, scratch.B);
    p.C = detail::real_operand<Scalar>(C, D, N, scratch.C);
    p.x = state.data();
    p.x_ld_d = state.innerStride();
    p.x_ld_n = state.outerStride();
    p.out = out.data();
    p.ld_out = out.outerStride();
    detail::run_real_scan(p);
  } else {
    // A and the state: N x D, one contiguous column per channel, real and imaginary parts apart.
    const MatrixX<Scalar> A_re = A.real().transpose(), A_im = A.imag().transpose();
    MatrixX<Scalar> x_re = state.real().transpose(), x_im = state.imag().transpose();
    detail::ComplexScanProblem<Scalar> p;
    p.L = L;
    p.D = D;
    p.N = N;
    p.u = u.data();
    p.ld_u = u.outerStride();
    p.delta = delta.data();
    p.ld_delta = delta.outerStride();
    p.z = detail::channel_columns<Scalar>(options.z, scratch.z, p.ld_z);
    p.delta_bias = detail::contiguous_vector<Scalar>(options.delta_bias, scratch.delta_bias);
    p.skip = detail::contiguous_vector<Scalar>(options.D, scratch.skip);
    p.softplus = options.delta_softplus;
    p.A_re = A_re.data();
    p.A_im = A_im.data();
    p.B = detail::complex_operand<Scalar>(B, D, N, scratch.B, scratch.B_im);
    p.C = detail::complex_operand<Scalar>(C, D, N, scratch.C, scratch.C_im);
    p.x_re = x_re.data();
    p.x_im = x_im.data();
    p.out = out.data();
    p.ld_out = out.outerStride();
    detail::run_complex_scan(p);
    for (Index d = 0; d < D; ++d)
      for (Index n = 0; n < N; ++n) state(d, n) = E(x_re(n, d), x_im(n, d));
  }
}

/// The selective scan (see the file comment for the math) from `options.initial_state` (zero when
/// empty), returning the output and the final state.
///
/// \param u      L x D input.
/// \param delta  L x D step sizes (before `delta_bias` and softplus).
/// \param A      D x N, real (`MatrixX<Scalar>`) or complex (`MatrixXc<Scalar>`, one mode of each
///               conjugate pair; the output is then 2 Re(C x)).
/// \param B, C   `ScanMatrix` views over the same element type as A.
/// \param options D skip, gate z, delta_bias, delta_softplus and the initial state (views).
/// \returns out (L x D) and the final state x_L (D x N).
/// \throws ssm::error naming the argument when a shape does not fit.
template <class E>
SelectiveScanResult<scan_real_t<E>, E> selective_scan(
    const Eigen::Ref<const Sequence<scan_real_t<E>>>& u, const Eigen::Ref<const Sequence<scan_real_t<E>>>& delta,
    const typename detail::scan_identity<ScanA<E>>::type& A, const ScanMatrix<E>& B, const ScanMatrix<E>& C,
    const typename detail::scan_identity<SelectiveScanOptions<scan_real_t<E>, E>>::type& options = {}) {
  const Index D = u.cols(), N = A.cols();
  SelectiveScanResult<scan_real_t<E>, E> r;
  if (!options.initial_state.empty()) {
    check_shape(options.initial_state.map(), D, N, "selective_scan", "options.initial_state", "D x N");
    r.last_state = options.initial_state.map();
  } else {
    r.last_state.setZero(D, N);
  }
  r.out.resize(u.rows(), D);
  SelectiveScanOptions<scan_real_t<E>, E> rest = options;
  rest.initial_state = {};
  selective_scan_into<E>(u, delta, A, B, C, rest, r.out, r.last_state);
  return r;
}

}  // namespace ssm
