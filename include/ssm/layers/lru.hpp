#pragma once
/// \file lru.hpp
/// The Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
/// Sequences"): a diagonal complex recurrence of N modes shared by H input and output channels,
///
///     lambda_n = exp(-exp(nu_log_n) + i exp(theta_log_n))       (|lambda| < 1 by construction)
///     x_t      = lambda .* x_{t-1} + (exp(gamma_log) .* B) u_t    B: N x H complex, u_t: H real
///     y_t      = Re(C x_t) + D .* u_t                             C: H x N complex, D: H real
///
/// The N modes are all kept (no conjugate pairs), so the output is Re(C x), without a factor 2.
/// gamma_log normalises each mode's input so that its stationary variance under white noise stays
/// O(1) however close |lambda| is to 1 (gamma = sqrt(1 - |lambda|^2) at initialisation).
///
/// Two modes from the same parameters (the layer concept, ssm/core/layer.hpp):
/// - recurrence: the diagonal scan (ssm/core/diagonal_scan.hpp) from a given state, and `step`;
/// - convolution (the unit is time-invariant): x_n = lambda_n^j * b_n per mode, with b = Bn u; done
///   in the frequency domain with real FFTs, the powers Re/Im lambda^l coming from the Vandermonde
///   kernel (ssm/kernels/vandermonde.hpp) and their spectra cached per length. Memory O(L (H + N)).
///   From a state x0 it adds the free response Re(C lambda^{t+1} x0) and returns the final state
///   lambda^L x0 + sum_k lambda^k b_{L-1-k} (ssm/kernels/state_sums.hpp).
///   Both modes are dominated by the mixing through B and C (O(L H N)); the convolution does it on
///   complex spectra, about twice the arithmetic of the recurrence's real GEMMs, so for the LRU the
///   recurrence is the faster mode (measured: H = 256, N = 64, L = 16384 in float, one thread, AVX-512:
///   20-50 ms recurrent against 0.4-0.9 s convolutional). The convolution is there as an independent
///   check of the recurrence and for callers who want the kernel view.
///
/// Shapes: u and y are L x H (rows are time); a `State` holds N complex values.
///
/// Example:
/// \code
///   std::mt19937_64 gen(0);
///   auto lru = ssm::LinearRecurrentUnit<double>::initialise(64, 128, gen, 0.9, 0.999);
///   auto state = lru.initial_state();
///   ssm::Sequence<double> y = lru.forward(u, state);             // u: L x 64; state is now x_{L-1}
///   ssm::Sequence<double> y2 = lru.forward(u, state2, ssm::Mode::convolution);  // the same y and state
/// \endcode

#include "ssm/core/diagonal_scan.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/layer.hpp"
#include "ssm/core/spectrum_cache.hpp"
#include "ssm/core/fft.hpp"
#include "ssm/core/causal_convolution.hpp"
#include "ssm/core/complex_arith.hpp"
#include "ssm/core/types.hpp"
#include "ssm/kernels/state_sums.hpp"
#include "ssm/kernels/vandermonde.hpp"

#include <algorithm>
#include <cmath>
#include <complex>
#include <memory>
#include <random>

namespace ssm {

/// The parameters of a Linear Recurrent Unit with H channels and N modes, as the paper trains them.
template <class T>
struct LinearRecurrentUnitParams {
  VectorX<T> nu_log;     ///< N: log of -log|lambda| (the decay rate)
  VectorX<T> theta_log;  ///< N: log of arg(lambda) (the rotation per step)
  VectorX<T> gamma_log;  ///< N: log of each mode's input normalisation
  MatrixXc<T> B;         ///< N x H: input matrix (before normalisation)
  MatrixXc<T> C;         ///< H x N: output matrix (y = Re(C x))
  VectorX<T> D;          ///< H: skip connection

  /// The same parameters in scalar U (each value rounded to U).
  template <class U>
  LinearRecurrentUnitParams<U> cast() const {
    return {nu_log.template cast<U>(), theta_log.template cast<U>(), gamma_log.template cast<U>(),
            B.template cast<std::complex<U>>(), C.template cast<std::complex<U>>(), D.template cast<U>()};
  }
};

/// A Linear Recurrent Unit over scalar `T` (float or double). Immutable once made; lambda and the
/// normalised B are caches of the parameters (formed in double). Copies share the spectrum cache;
/// const member functions are safe to call from many threads.
template <class T>
class LinearRecurrentUnit {
  static_assert(is_supported_scalar_v<T>, "LinearRecurrentUnit: T must be float or double");

 public:
  using Scalar = T;
  using Params = LinearRecurrentUnitParams<T>;

  /// Recurrent state of one stream: N complex values.
  struct State {
    VectorXc<T> x;
    using scalar_type = T;  ///< float or double: the real type of the values
    static constexpr const char* kind = "LRU";
    /// The arrays that carry the stream (not the scratch), for io::save_state / io::restore_state.
    template <class Visitor>
    void visit(Visitor& v) {
      v("x", x);
    }
    /// Back to the zero state (keeps the memory).
    void reset() { x.setZero(); }
  };

  /// Checks and keeps `params`: every field finite, nu_log, theta_log, gamma_log of N entries,
  /// B N x H, C H x N, D H entries (H, N >= 1); throws ssm::error naming the field otherwise.
  SSM_NOINLINE explicit LinearRecurrentUnit(Params params) : p_(std::move(params)), spectra_(std::make_shared<SpectrumCache<T>>()) {
    const char* where = "LinearRecurrentUnit";
    const Index N = p_.nu_log.size(), H = p_.D.size();
    check(N >= 1 && (p_.nu_log.cols() == 1 || p_.nu_log.rows() == 1), where, "nu_log", "a vector of N >= 1",
          shape_string(p_.nu_log.rows(), p_.nu_log.cols()));
    check(H >= 1 && (p_.D.cols() == 1 || p_.D.rows() == 1), where, "D", "a vector of H >= 1",
          shape_string(p_.D.rows(), p_.D.cols()));
    check_size(p_.theta_log, N, where, "theta_log", "N, the size of nu_log");
    check_size(p_.gamma_log, N, where, "gamma_log", "N, the size of nu_log");
    check_shape(p_.B, N, H, where, "B", "N x H");
    check_shape(p_.C, H, N, where, "C", "H x N");
    check_finite(p_.nu_log, where, "nu_log");
    check_finite(p_.theta_log, where, "theta_log");
    check_finite(p_.gamma_log, where, "gamma_log");
    check_finite(p_.B, where, "B");
    check_finite(p_.C, where, "C");
    check_finite(p_.D, where, "D");
    log_lambda_.resize(N);
    lambda_.resize(N);
    b_norm_.resize(N, H);
    for (Index n = 0; n < N; ++n) {
      log_lambda_(n) = {-std::exp(double(p_.nu_log(n))), std::exp(double(p_.theta_log(n)))};
      lambda_(n) = std::complex<T>(std::exp(log_lambda_(n)));
      const double gamma = std::exp(double(p_.gamma_log(n)));
      for (Index h = 0; h < H; ++h) b_norm_(n, h) = std::complex<T>(gamma * std::complex<double>(p_.B(n, h)));
    }
    b_re_t_ = b_norm_.real().transpose();
    b_im_t_ = b_norm_.imag().transpose();
    c_re_t_ = p_.C.real().transpose();
    c_im_t_ = p_.C.imag().transpose();
  }

  /// Recurrent mode whatever `Mode::automatic` is asked: measured faster than the convolution at every L.
  Mode preferred_mode(Index) const { return Mode::recurrence; }

  /// The paper's ring initialisation, drawing from `gen` in this order: u1 (N uniform [0, 1)), u2 (N),
  /// Re B, Im B (N x H normal, row by row), Re C, Im C (H x N normal, row by row), D (H normal):
  ///   nu_log    = log(-log(u1 (r_max^2 - r_min^2) + r_min^2) / 2)   (|lambda| uniform on the ring's area)
  ///   theta_log = log(max_phase u2)
  ///   gamma_log = log(sqrt(1 - |lambda|^2))
  ///   B = (normal + i normal) / sqrt(2 H),  C = (normal + i normal) / sqrt(N),  D = normal.
  /// Requires 0 <= r_min < r_max < 1 and max_phase > 0. Computed in double.
  SSM_NOINLINE static LinearRecurrentUnit initialise(Index H, Index N, std::mt19937_64& gen, double r_min = 0.0,
                                        double r_max = 1.0 - 1e-3, double max_phase = 6.283185307179586) {
    const char* where = "LinearRecurrentUnit::initialise";
    check(H >= 1, where, "H", ">= 1", detail::concat(H));
    check(N >= 1, where, "N", ">= 1", detail::concat(N));
    check(r_min >= 0 && r_min < r_max, where, "r_min", detail::concat("0 <= r_min < r_max = ", r_max),
          detail::concat(r_min));
    check(r_max < 1, where, "r_max", "< 1 (a stable ring)", detail::concat(r_max));
    check_positive(max_phase, where, "max_phase");
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    std::normal_distribution<double> normal(0.0, 1.0);
    Params p;
    p.nu_log.resize(N);
    p.theta_log.resize(N);
    p.gamma_log.resize(N);
    VectorX<double> u1(N), u2(N);
    for (Index n = 0; n < N; ++n) u1(n) = uniform(gen);
    for (Index n = 0; n < N; ++n) u2(n) = uniform(gen);
    for (Index n = 0; n < N; ++n) {
      // u2 = 0 would give theta_log = -inf: nudge to the smallest positive double (phase 0 to all digits).
      const double nu_log = std::log(-0.5 * std::log(u1(n) * (r_max * r_max - r_min * r_min) + r_min * r_min));
      const double theta_log = std::log(max_phase * std::max(u2(n), std::numeric_limits<double>::min()));
      const double modulus = std::exp(-std::exp(nu_log));
      p.nu_log(n) = T(nu_log);
      p.theta_log(n) = T(theta_log);
      p.gamma_log(n) = T(0.5 * std::log1p(-modulus * modulus));
    }
    auto complex_normal = [&](Index rows, Index cols, double scale) {
      MatrixX<double> re(rows, cols), im(rows, cols);
      for (Index r = 0; r < rows; ++r)
        for (Index c = 0; c < cols; ++c) re(r, c) = normal(gen);
      for (Index r = 0; r < rows; ++r)
        for (Index c = 0; c < cols; ++c) im(r, c) = normal(gen);
      MatrixXc<T> out(rows, cols);
      for (Index c = 0; c < cols; ++c)
        for (Index r = 0; r < rows; ++r) out(r, c) = std::complex<T>(T(re(r, c) * scale), T(im(r, c) * scale));
      return out;
    };
    p.B = complex_normal(N, H, 1.0 / std::sqrt(2.0 * double(H)));
    p.C = complex_normal(H, N, 1.0 / std::sqrt(double(N)));
    p.D.resize(H);
    for (Index h = 0; h < H; ++h) p.D(h) = T(normal(gen));
    return LinearRecurrentUnit(std::move(p));
  }

  /// The parameters this unit was made from.
  const Params& params() const { return p_; }
  /// H: input and output channels.
  Index channels() const { return p_.D.size(); }
  /// N: complex modes (the state size).
  Index state_size() const { return p_.nu_log.size(); }
  /// lambda (N): exp(-exp(nu_log) + i exp(theta_log)), formed in double and rounded to T.
  const VectorXc<T>& lambda() const { return lambda_; }
  /// The normalised input matrix exp(gamma_log) .* B (N x H).
  const MatrixXc<T>& B_normalised() const { return b_norm_; }

  /// The zero state (N).
  State initial_state() const { return State{VectorXc<T>::Zero(state_size())}; }

  /// A whole sequence from `state` (x_{-1}): returns y (L x H) and leaves x_{L-1} in `state`, so consecutive
  /// calls continue exactly. u is L x H (L >= 0). Both modes give the same y and state up to rounding:
  /// - recurrence (the default: faster at every L): time in chunks, b = Bn u by GEMM, the diagonal scan,
  ///   y = Re(C x) + D u by GEMM (scratch O(chunk x (N + H)));
  /// - convolution: `forward(u)` plus the free response Re(C lambda^{t+1} x0), and the final state
  ///   lambda^L x0 + sum_k lambda^k b_{L-1-k}.
  SSM_NOINLINE Sequence<T> forward(const Eigen::Ref<const Sequence<T>>& u, State& state, Mode mode = Mode::automatic) const {
    const char* where = "LinearRecurrentUnit::forward";
    check(u.cols() == channels(), where, "u", detail::concat("L x ", channels(), " (L x H)"),
          shape_string(u.rows(), u.cols()));
    check_state(state, where);
    if (mode == Mode::automatic) mode = preferred_mode(u.rows());
    if (mode == Mode::convolution && u.rows() > 0) return forward_convolution(u, state);
    const Index L = u.rows(), H = channels(), N = state_size();
    Sequence<T> y(L, H);
    if (L == 0) return y;
    const Index chunk = std::min<Index>(L, std::max<Index>(1024, (Index(1) << 17) / N));
    MatrixX<T> xr(chunk, N), xi(chunk, N);
    MatrixXc<T> x(chunk, N);
    for (Index t0 = 0; t0 < L; t0 += chunk) {
      const Index n = std::min(chunk, L - t0);
      const auto u_chunk = u.middleRows(t0, n);
      // b_t = Bn u_t for every step of the chunk: two real GEMMs.
      xr.topRows(n).noalias() = u_chunk * b_re_t_;
      xi.topRows(n).noalias() = u_chunk * b_im_t_;
      for (Index m = 0; m < N; ++m)
        for (Index t = 0; t < n; ++t) x(t, m) = std::complex<T>(xr(t, m), xi(t, m));
      diagonal_scan_inplace(lambda_, x.topRows(n), state.x);
      xr.topRows(n) = x.topRows(n).real();
      xi.topRows(n) = x.topRows(n).imag();
      // y_t = Re(C x_t) + D u_t = Re(x_t) Re(C)^T - Im(x_t) Im(C)^T + D u_t.
      auto y_chunk = y.middleRows(t0, n);
      y_chunk.noalias() = xr.topRows(n) * c_re_t_;
      y_chunk.noalias() -= xi.topRows(n) * c_im_t_;
      y_chunk.noalias() += u_chunk * p_.D.asDiagonal();
    }
    return y;
  }

  /// One step: x = lambda .* x + Bn u, y = Re(C x) + D u. `u` and `y` have H entries (a row of an
  /// L x H sequence works); `y` may alias `u` (u is read in full before y(h) is written, and y(h) reads
  /// only u(h)). Allocates nothing.
  SSM_NOINLINE void step(const Eigen::Ref<const VectorX<T>, 0, Eigen::InnerStride<>>& u, State& state,
            Eigen::Ref<VectorX<T>, 0, Eigen::InnerStride<>> y) const {
    const char* where = "LinearRecurrentUnit::step";
    // Messages are built only on failure: a passing check allocates nothing.
    if (u.size() != channels()) check_size(u, channels(), where, "u", "H");
    if (y.size() != channels()) check_size(y, channels(), where, "y", "H");
    check_state(state, where);
    const Index H = channels(), N = state_size();
    for (Index n = 0; n < N; ++n) {
      T br = 0, bi = 0;
      for (Index h = 0; h < H; ++h) {
        br += b_re_t_(h, n) * u(h);
        bi += b_im_t_(h, n) * u(h);
      }
      state.x(n) = cmuladd(lambda_(n), state.x(n), std::complex<T>(br, bi));
    }
    for (Index h = 0; h < H; ++h) {
      T acc = p_.D(h) * u(h);
      for (Index n = 0; n < N; ++n) acc += c_re_t_(n, h) * state.x(n).real() - c_im_t_(n, h) * state.x(n).imag();
      y(h) = acc;
    }
  }

  /// Re(lambda^l) and Im(lambda^l), l < L, as an L x 2N sequence (columns n and N + n): the impulse
  /// responses of the modes, from the Vandermonde kernel with the exact log lambda.
  SSM_NOINLINE Sequence<T> mode_kernels(Index L) const {
    check(L >= 1, "LinearRecurrentUnit::mode_kernels", "L", ">= 1", detail::concat(L));
    const Index N = state_size();
    MatrixXc<double> logs(2 * N, 1), weights(2 * N, 1);
    for (Index n = 0; n < N; ++n) {
      logs(n, 0) = logs(N + n, 0) = log_lambda_(n);
      weights(n, 0) = {0.5, 0.0};       // 2 Re(z / 2) = Re z
      weights(N + n, 0) = {0.0, -0.5};  // 2 Re(-i z / 2) = Im z
    }
    return vandermonde_kernel<T>(logs, weights, L);
  }

  /// Convolution mode from the zero state: the same y as the recurrence from `initial_state()`.
  /// u is L x H (L >= 0).
  SSM_NOINLINE Sequence<T> forward(const Eigen::Ref<const Sequence<T>>& u) const {
    const char* where = "LinearRecurrentUnit::forward";
    check(u.cols() == channels(), where, "u", detail::concat("L x ", channels(), " (L x H)"),
          shape_string(u.rows(), u.cols()));
    if (u.rows() == 0) return Sequence<T>(0, channels());
    const Index L = u.rows(), H = channels(), N = state_size();
    const auto spectra = kernel_spectrum(L);  // (bins x 2N): [Re lambda^l | Im lambda^l], scaled by 1/n
    const Index n = spectra->fft_size, bins = n / 2 + 1;
    const auto plan = fft::real_fft<T>(n);
    // U: the inputs' spectra, bins x H.
    MatrixXc<T> U(bins, H);
    fft::Buffer<T> padded(n);
    fft::Buffer<std::complex<T>> work(bins);
    for (Index h = 0; h < H; ++h) {
      for (Index t = 0; t < L; ++t) padded[t] = u(t, h);
      std::fill(padded.data() + L, padded.data() + n, T(0));
      plan->forward(padded, work);
      for (Index b = 0; b < bins; ++b) U(b, h) = work[b];
    }
    // Per block of frequency bins: BR = U Re(Bn)^T, BI = U Im(Bn)^T (spectra of the real and imaginary
    // parts of b = Bn u), X = lambda^l * b per mode, Y = XR Re(C)^T - XI Im(C)^T.
    MatrixXc<T> Y(bins, H);
    const Index block = std::min<Index>(bins, 512);
    MatrixXc<T> BR(block, N), BI(block, N), XR(block, N), XI(block, N);
    for (Index b0 = 0; b0 < bins; b0 += block) {
      const Index nb = std::min(block, bins - b0);
      BR.topRows(nb).noalias() = U.middleRows(b0, nb) * b_re_t_;  // complex x real: Eigen's mixed GEMM
      BI.topRows(nb).noalias() = U.middleRows(b0, nb) * b_im_t_;
      const auto KR = spectra->spectrum.block(b0, 0, nb, N).array();
      const auto KI = spectra->spectrum.block(b0, N, nb, N).array();
      XR.topRows(nb).array() = KR * BR.topRows(nb).array() - KI * BI.topRows(nb).array();
      XI.topRows(nb).array() = KR * BI.topRows(nb).array() + KI * BR.topRows(nb).array();
      Y.middleRows(b0, nb).noalias() = XR.topRows(nb) * c_re_t_;
      Y.middleRows(b0, nb).noalias() -= XI.topRows(nb) * c_im_t_;
    }
    Sequence<T> y(L, H);
    for (Index h = 0; h < H; ++h) {
      for (Index b = 0; b < bins; ++b) work[b] = Y(b, h);
      plan->inverse(work, padded);
      for (Index t = 0; t < L; ++t) y(t, h) = padded[t] + p_.D(h) * u(t, h);
    }
    return y;
  }

  /// The cached spectra of `mode_kernels(L)`, padded for inputs of length L: (n/2 + 1) x 2N complex values
  /// per length, n the FFT size >= 2L, kept in `spectrum_cache()` (shared by copies of the unit).
  SSM_NOINLINE std::shared_ptr<const KernelSpectrum<T>> kernel_spectrum(Index L) const {
    check(L >= 1, "LinearRecurrentUnit::kernel_spectrum", "L", ">= 1", detail::concat(L));
    return spectra_->get_or_make(L, [&] { return make_kernel_spectrum<T>(mode_kernels(L), L); });
  }

  /// The per-length spectrum cache: bounded by a byte budget (`SpectrumCache::default_budget` unless set),
  /// least recently used lengths evicted first; `clear()`, `bytes()`, `set_budget()`.
  SpectrumCache<T>& spectrum_cache() const { return *spectra_; }

 private:
  /// Convolution mode from a state (L >= 1), see `forward(u, state, mode)`.
  SSM_NOINLINE Sequence<T> forward_convolution(const Eigen::Ref<const Sequence<T>>& u, State& state) const {
    const Index L = u.rows(), H = channels(), N = state_size();
    Sequence<T> y = forward(u);
    const VectorXc<double> x0 = state.x.template cast<std::complex<double>>();
    if (!x0.isZero(0)) {
      // Re sum_n C[h,n] lambda_n^{t+1} x0_n = 2 Re sum_n (C lambda x0 / 2)[h,n] lambda_n^t.
      const MatrixXc<double> log_z = log_lambda_.transpose().replicate(H, 1);  // H x N
      const VectorXc<double> w = 0.5 * (log_lambda_.array().exp() * x0.array()).matrix();
      const MatrixXc<double> W = p_.C.template cast<std::complex<double>>() * w.asDiagonal();
      y += vandermonde_kernel<T>(log_z, W, L);
    }
    // x_{L-1} = lambda^L x0 + sum_k lambda^k b_{L-1-k}, b = Bn u: the real and imaginary parts of b as 2N
    // real sequences, each with one mode.
    MatrixX<T> b(L, 2 * N);
    b.leftCols(N).noalias() = u * b_re_t_;
    b.rightCols(N).noalias() = u * b_im_t_;
    MatrixXc<double> log_z(1, 2 * N);
    log_z << log_lambda_.transpose(), log_lambda_.transpose();
    const MatrixXc<double> sums = kernels::diagonal_state_sum<T>(log_z, b);
    const VectorXc<double> decay = (double(L) * log_lambda_.array()).exp().matrix();
    for (Index n = 0; n < N; ++n)
      state.x(n) = std::complex<T>(decay(n) * x0(n) + sums(0, n) + std::complex<double>(0, 1) * sums(0, N + n));
    return y;
  }

  void check_state(const State& state, const char* where) const {
    if (state.x.size() != state_size() || state.x.cols() != 1) check_size(state.x, state_size(), where, "state.x", "N");
  }

  Params p_;
  VectorXc<double> log_lambda_;  // N: -exp(nu_log) + i exp(theta_log), exact
  VectorXc<T> lambda_;           // N
  MatrixXc<T> b_norm_;           // N x H: exp(gamma_log) .* B
  MatrixX<T> b_re_t_, b_im_t_;   // H x N: Re and Im of b_norm_^T
  MatrixX<T> c_re_t_, c_im_t_;   // N x H: Re and Im of C^T
  std::shared_ptr<SpectrumCache<T>> spectra_;  // shared by copies
};

SSM_EXTERN_TEMPLATE_FLOAT_DOUBLE(LinearRecurrentUnit)  // see SSM_NOINLINE in ssm/core/config.hpp

}  // namespace ssm
