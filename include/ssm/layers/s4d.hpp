#pragma once
/// \file s4d.hpp
/// S4D: the diagonal structured state space layer (Gu et al. 2022, "On the Parameterization and
/// Initialization of Diagonal State Space Models").
///
/// H independent channels (one input and one output each), each a diagonal system of N/2 complex
/// modes; the other N/2 modes are their conjugates, so only one of each pair is kept and the output
/// takes twice the real part. In continuous time, for channel h and mode n:
///
///     x'_n(t) = Lambda[h,n] x_n(t) + B[h,n] u(t),     y(t) = 2 Re sum_n C[h,n] x_n(t) + D[h] u(t),
///
/// so the state matrix is A = diag(Lambda) (named as S4's diagonal part, ssm/layers/s4.hpp). Discretised
/// with step dt[h] = exp(log_dt[h]) (ZOH or bilinear, see ssm/discretize.hpp) this becomes
///
///     x_t = Abar .* x_{t-1} + Bbar u_t,          y_t = 2 Re(C . x_t) + D u_t,
///
/// which runs in two modes that read the same parameters (the layer concept, ssm/core/layer.hpp):
/// - convolution: y = K * u + D u with the kernel K[l, h] = 2 Re sum_n C Bbar Abar^l (a Vandermonde
///   product, ssm/kernels/vandermonde.hpp) applied by FFT; the kernel's spectrum is cached per length.
///   From a state x0 it adds the free response 2 Re sum_n C Abar^{t+1} x0 (another Vandermonde product)
///   and returns the final state Abar^L x0 + Bbar sum_k Abar^k u_{L-1-k} (the kernel transposed,
///   ssm/kernels/state_sums.hpp), so a long prompt runs by convolution and streaming continues from it.
///   With `S4DParams::kernel_length` set (the reference's l_max) only K[0 .. min(L, kernel_length)) is used
///   by `forward(u)` (the recurrence is never truncated);
/// - recurrence: the diagonal scan (ssm/core/diagonal_scan.hpp) over a whole sequence from a given
///   state, or `step` one sample at a time (allocation-free), with the state owned by the caller.
/// And, as S5 does, irregularly sampled sequences: step k lasts dt[h] * interval_k and is discretised
/// for exactly that length.
///
/// Shapes: u and y are L x H (rows are time); the parameters are H x M complex with M = N/2; a
/// `State` holds M x H complex values (column h is channel h's modes, like the columns of a sequence).
///
/// Example:
/// \code
///   std::mt19937_64 gen(0);
///   auto layer = ssm::S4D<float>::initialise(64, 64, ssm::hippo::DiagonalInit::inv, ssm::Discretization::zoh, gen);
///   ssm::Sequence<float> y = layer.forward(u);                 // u: L x 64, convolution mode
///   auto state = layer.initial_state();
///   ssm::Sequence<float> y2 = layer.forward(u, state);          // same y; state is now x_{L-1}
///   Eigen::VectorXf out(64);
///   layer.step(next_sample, state, out);                        // streaming, one step
/// \endcode

#include "ssm/core/causal_convolution.hpp"
#include "ssm/core/complex_arith.hpp"
#include "ssm/core/diagonal_scan.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/layer.hpp"
#include "ssm/core/parallel.hpp"
#include "ssm/core/spectrum_cache.hpp"
#include "ssm/core/types.hpp"
#include "ssm/discretize.hpp"
#include "ssm/hippo.hpp"
#include "ssm/kernels/state_sums.hpp"
#include "ssm/kernels/vandermonde.hpp"

#include <algorithm>
#include <cmath>
#include <complex>
#include <memory>
#include <random>

namespace ssm {

/// The parameters of an S4D layer, in their physical meaning (H channels, M = N/2 modes each).
template <class T>
struct S4DParams {
  MatrixXc<T> Lambda;  ///< H x M: continuous-time eigenvalues, Re <= 0 (one of each conjugate pair); A = diag(Lambda)
  MatrixXc<T> B;       ///< H x M: input coefficients
  MatrixXc<T> C;       ///< H x M: output coefficients (the output is 2 Re(C x))
  VectorX<T> D;        ///< H: skip connection, y += D .* u
  VectorX<T> log_dt;   ///< H: log of each channel's step size, dt = exp(log_dt) (as PyTorch stores it)
  Discretization discretization = Discretization::zoh;  ///< how (A, B, dt) become (Abar, Bbar)
  /// Longest kernel the convolution mode uses, as the reference's FFTConv built with l_max: `forward` on an
  /// input of length L convolves with K[0 .. Lk) for Lk = min(L, kernel_length), zero beyond. 0 (the
  /// default) means unlimited: Lk = L. The recurrence (`step`, `forward(u, state)`, `forward_irregular`) is
  /// never truncated, so it agrees with `forward` only when L <= kernel_length (or kernel_length = 0). >= 0.
  Index kernel_length = 0;

  Index channels() const { return Lambda.rows(); }
  Index modes() const { return Lambda.cols(); }
  /// dt = exp(log_dt), H entries.
  VectorX<T> dt() const {
    return log_dt.unaryExpr([](T v) { return std::exp(v); });  // std::exp: underflow gives 0 on every ISA
  }

  /// The same parameters in scalar U (each value rounded to U).
  template <class U>
  S4DParams<U> cast() const {
    return {Lambda.template cast<std::complex<U>>(), B.template cast<std::complex<U>>(),
            C.template cast<std::complex<U>>(),      D.template cast<U>(),
            log_dt.template cast<U>(),               discretization,
            kernel_length};
  }
};

/// An S4D layer over scalar `T` (float or double). Immutable once made: the discretised system and
/// the kernel spectra are caches of the parameters. Copies share the spectrum cache; all const
/// member functions are safe to call from many threads.
template <class T>
class S4D {
  static_assert(is_supported_scalar_v<T>, "S4D: T must be float or double");

 public:
  using Scalar = T;
  using Params = S4DParams<T>;

  /// Recurrent state of one stream: x is M x H complex (column h: channel h's modes).
  struct State {
    MatrixXc<T> x;
    using scalar_type = T;  ///< float or double: the real type of the values
    static constexpr const char* kind = "S4D";
    /// The arrays that carry the stream (not the scratch), for io::save_state / io::restore_state.
    template <class Visitor>
    void visit(Visitor& v) {
      v("x", x);
    }
    /// Back to the zero state (keeps the memory).
    void reset() { x.setZero(); }
  };

  /// Checks and keeps `params` (throws ssm::error naming the field on a bad shape, a non-finite
  /// value, a log_dt whose exp is not a positive finite step, or Re Lambda > 0; the bilinear transform's
  /// singular point dt Lambda = 2 has Re > 0 and is excluded with it), then discretises in double.
  SSM_NOINLINE explicit S4D(Params params) : p_(std::move(params)), spectra_(std::make_shared<SpectrumCache<T>>()) {
    const char* where = "S4D";
    const Index H = p_.Lambda.rows(), M = p_.Lambda.cols();
    check(H >= 1 && M >= 1, where, "Lambda", "H x M with H, M >= 1", shape_string(H, M));
    check_shape(p_.B, H, M, where, "B", "H x M, the shape of Lambda");
    check_shape(p_.C, H, M, where, "C", "H x M, the shape of Lambda");
    check_size(p_.D, H, where, "D", "one per channel (H)");
    check_size(p_.log_dt, H, where, "log_dt", "one per channel (H)");
    check_finite(p_.Lambda, where, "Lambda");
    check_finite(p_.B, where, "B");
    check_finite(p_.C, where, "C");
    check_finite(p_.D, where, "D");
    check_finite(p_.log_dt, where, "log_dt");
    const VectorX<double> dt = p_.log_dt.template cast<double>().unaryExpr([](double v) { return std::exp(v); });
    check_all_positive(dt, where, "exp(log_dt)");
    check(p_.kernel_length >= 0, where, "kernel_length", ">= 0 (0: unlimited)", detail::concat(p_.kernel_length));
    for (Index m = 0; m < M; ++m)
      for (Index h = 0; h < H; ++h)
        if (!(p_.Lambda(h, m).real() <= 0))  // the message is built only on failure
          check(false, where, "Lambda", "Re Lambda <= 0 (stable modes)",
                detail::concat("Lambda(", h, ", ", m, ") = ", p_.Lambda(h, m)));
    // Discretised in double (discretize_diagonal checks dt A != 2 for bilinear).
    const MatrixXc<double> A = p_.Lambda.template cast<std::complex<double>>();
    const auto d = discretize_diagonal<double>(A, p_.B.template cast<std::complex<double>>(), dt, p_.discretization);
    a_bar_ = d.A_bar.transpose().template cast<std::complex<T>>();
    b_bar_ = d.B_bar.transpose().template cast<std::complex<T>>();
    c_ = p_.C.transpose();
    b_bar_double_ = d.B_bar.transpose();
    weights_ = p_.C.template cast<std::complex<double>>().cwiseProduct(d.B_bar);
    log_a_bar_.resize(H, M);
    for (Index m = 0; m < M; ++m)
      for (Index h = 0; h < H; ++h) {
        const std::complex<double> z = dt(h) * A(h, m);
        // log Abar exactly: dt A for ZOH; log((1 + z/2)/(1 - z/2)) = 2 atanh(z/2) for bilinear.
        log_a_bar_(h, m) = p_.discretization == Discretization::zoh ? z : 2.0 * std::atanh(0.5 * z);
      }
    log_a_bar_t_ = log_a_bar_.transpose();
  }

  /// A layer initialised as in the S4D paper: Lambda and B from `init` (ssm::hippo::diagonal_init, the same
  /// for every channel), C complex normal (real and imaginary parts N(0, 1/2)), D standard normal,
  /// dt log-uniform in [dt_min, dt_max] (ssm::hippo::log_uniform_dt); all drawn from `gen`.
  /// N is the full state size (even): the layer keeps N/2 modes.
  /// As the reference's SSMKernelDiag (which stores -Re A and -Im A clamped to >= 1e-4), Lambda is bounded:
  /// Re <= -1e-4 and Im <= -1e-4. So S4D-Real gets Im = -1e-4 and S4D-Lin's mode 0 Im = -1e-4.
  SSM_NOINLINE static S4D initialise(Index H, Index N, hippo::DiagonalInit init, Discretization method, std::mt19937_64& gen,
                        double dt_min = 1e-3, double dt_max = 1e-1) {
    check(H >= 1, "S4D::initialise", "H", ">= 1", detail::concat(H));
    const hippo::DiagonalModes modes = hippo::diagonal_init(init, N);
    const Index M = modes.A.size();
    Params p;
    VectorXc<double> A = modes.A;
    for (Index m = 0; m < M; ++m)
      A(m) = std::complex<double>(std::min(A(m).real(), -1e-4), std::min(A(m).imag(), -1e-4));
    p.Lambda = A.transpose().replicate(H, 1).template cast<std::complex<T>>();
    p.B = modes.B.transpose().replicate(H, 1).template cast<std::complex<T>>();
    std::normal_distribution<double> normal(0.0, 1.0);
    const double s = std::sqrt(0.5);
    p.C.resize(H, M);
    for (Index m = 0; m < M; ++m)
      for (Index h = 0; h < H; ++h) p.C(h, m) = std::complex<T>(T(s * normal(gen)), T(s * normal(gen)));
    p.D.resize(H);
    for (Index h = 0; h < H; ++h) p.D(h) = T(normal(gen));
    p.log_dt = hippo::log_uniform_dt(H, dt_min, dt_max, gen).array().log().matrix().template cast<T>();
    p.discretization = method;
    return S4D(std::move(p));
  }

  /// The parameters this layer was made from.
  const Params& params() const { return p_; }
  /// H: number of channels.
  Index channels() const { return p_.channels(); }
  /// M = N/2: complex modes per channel.
  Index modes() const { return p_.modes(); }
  /// N: the real state size (2 M).
  Index state_size() const { return 2 * modes(); }
  /// Abar, M x H (column h: channel h), rounded to T from the double discretisation.
  const MatrixXc<T>& A_bar() const { return a_bar_; }
  /// Bbar, M x H.
  const MatrixXc<T>& B_bar() const { return b_bar_; }

  /// The convolution kernel K[l, h] = 2 Re sum_n C[h,n] Bbar[h,n] Abar[h,n]^l, l < L: L x H (without D).
  SSM_NOINLINE Sequence<T> kernel(Index L) const {
    check(L >= 1, "S4D::kernel", "L", ">= 1", detail::concat(L));
    return vandermonde_kernel<T>(log_a_bar_, weights_, L);
  }

  /// Kernel taps `forward` uses for an input of length L: min(L, kernel_length), or L when kernel_length = 0.
  Index convolution_length(Index L) const { return p_.kernel_length > 0 ? std::min(L, p_.kernel_length) : L; }

  /// The padded spectrum `forward` uses for inputs of length L: of kernel(convolution_length(L)), zero
  /// beyond. Made once per L and kept in `spectrum_cache()` (shared by copies of the layer; keyed by L alone,
  /// since kernel_length is fixed for the layer). An entry holds (n/2 + 1) x H complex values, n the FFT
  /// size >= 2L: 33.5 MB at H = 256, L = 16384 in float.
  SSM_NOINLINE std::shared_ptr<const KernelSpectrum<T>> kernel_spectrum(Index L) const {
    check(L >= 1, "S4D::kernel_spectrum", "L", ">= 1", detail::concat(L));
    return spectra_->get_or_make(L, [&] { return make_kernel_spectrum<T>(kernel(convolution_length(L)), L); });
  }

  /// The per-length spectrum cache: bounded by a byte budget (`SpectrumCache::default_budget` unless set),
  /// least recently used lengths evicted first; `clear()`, `bytes()`, `set_budget()`.
  SpectrumCache<T>& spectrum_cache() const { return *spectra_; }

  /// Convolution mode from the zero state: y = K * u + D .* u. u is L x H (L >= 0); returns L x H. K has
  /// convolution_length(L) taps (all L unless `S4DParams::kernel_length` limits it).
  Sequence<T> forward(const Eigen::Ref<const Sequence<T>>& u) const {
    check(u.cols() == channels(), "S4D::forward", "u", detail::concat("L x ", channels(), " (L x H)"),
          shape_string(u.rows(), u.cols()));
    if (u.rows() == 0) return Sequence<T>(0, channels());
    return convolve(u);
  }

  /// The zero state (M x H).
  State initial_state() const { return State{MatrixXc<T>::Zero(modes(), channels())}; }

  /// The mode `forward(u, state)` runs for L steps when asked for `Mode::automatic`: the convolution from
  /// L = 256 on (the measured crossover, bench/RESULTS.md), the recurrence below it, and always the
  /// recurrence when `kernel_length` would truncate the convolution.
  Mode preferred_mode(Index L) const {
    return L >= 256 && convolution_length(L) == L ? Mode::convolution : Mode::recurrence;
  }

  /// A whole sequence from `state` (x_{-1}): returns y (L x H) and leaves x_{L-1} in `state`, so
  /// consecutive calls continue exactly (chunked prefill). u is L x H (L >= 0). Both modes give the same
  /// y and state up to rounding:
  /// - recurrence: the diagonal scan;
  /// - convolution: y = K * u + D u + 2 Re sum_n C Abar^{t+1} x0 and x_{L-1} = Abar^L x0 + Bbar sum_k
  ///   Abar^k u_{L-1-k}. It needs the untruncated kernel: with kernel_length < L it throws.
  SSM_NOINLINE Sequence<T> forward(const Eigen::Ref<const Sequence<T>>& u, State& state, Mode mode = Mode::automatic) const {
    const char* where = "S4D::forward";
    check(u.cols() == channels(), where, "u", detail::concat("L x ", channels(), " (L x H)"),
          shape_string(u.rows(), u.cols()));
    check_state(state, where);
    const Index L = u.rows();
    if (mode == Mode::automatic) mode = preferred_mode(L);
    if (mode == Mode::recurrence || L == 0) return run(u, nullptr, state);
    check(convolution_length(L) == L, where, "mode",
          detail::concat("the recurrence for L > kernel_length = ", p_.kernel_length,
                         " (a truncated kernel has no state)"),
          detail::concat("convolution with L = ", L));
    Sequence<T> y = convolve(u);
    const MatrixXc<double> x0 = state.x.template cast<std::complex<double>>();  // M x H
    if (!x0.isZero(0)) {
      // 2 Re sum_n (C Abar x0) Abar^t: a Vandermonde kernel with weights C .* Abar .* x0.
      const MatrixXc<double> w = p_.C.template cast<std::complex<double>>().cwiseProduct(
          (log_a_bar_.array().exp() * x0.transpose().array()).matrix());
      y += vandermonde_kernel<T>(log_a_bar_, w, L);
    }
    const MatrixXc<double> sums = kernels::diagonal_state_sum<T>(log_a_bar_t_, u);
    const MatrixXc<double> decay = kernels::diagonal_power(log_a_bar_t_, double(L));
    state.x = (decay.cwiseProduct(x0) + b_bar_double_.cwiseProduct(sums)).template cast<std::complex<T>>();
    return y;
  }

  /// Irregular sampling: step k lasts dt[h] * intervals[k] (intervals > 0, L entries) and is discretised
  /// for that length with the layer's method (ZOH: x_k = exp(tau A) x_{k-1} + (exp(tau A) - 1)/A B u_k,
  /// tau = dt intervals_k). From `state`, returns y (L x H) and leaves x_{L-1} in `state`. With all
  /// intervals 1 this is `forward(u, state, Mode::recurrence)`.
  SSM_NOINLINE Sequence<T> forward_irregular(const Eigen::Ref<const Sequence<T>>& u, const Eigen::Ref<const VectorX<T>>& intervals,
                                State& state) const {
    const char* where = "S4D::forward_irregular";
    check(u.cols() == channels(), where, "u", detail::concat("L x ", channels(), " (L x H)"),
          shape_string(u.rows(), u.cols()));
    check_size(intervals, u.rows(), where, "intervals", "one per time step (L)");
    check_all_positive(intervals, where, "intervals");
    check_state(state, where);
    // Bilinear's singular step (1 - tau A / 2 = 0) needs Re A > 0, which the constructor rejected.
    const VectorX<double> iv = intervals.template cast<double>();
    return run(u, &iv, state);
  }

  /// One step of the recurrence for all H channels: x = Abar .* x + Bbar u, y = 2 Re(C . x) + D u.
  /// `u` and `y` have H entries (contiguous or strided: a row of an L x H sequence works); `y` may
  /// alias `u`. Allocates nothing; shapes are checked (cheaply) every call.
  SSM_NOINLINE void step(const Eigen::Ref<const VectorX<T>, 0, Eigen::InnerStride<>>& u, State& state,
            Eigen::Ref<VectorX<T>, 0, Eigen::InnerStride<>> y) const {
    const char* where = "S4D::step";
    // Messages are built only on failure: a passing check allocates nothing.
    if (u.size() != channels()) check_size(u, channels(), where, "u", "H");
    if (y.size() != channels()) check_size(y, channels(), where, "y", "H");
    check_state(state, where);
    const Index H = channels(), M = modes();
    for (Index h = 0; h < H; ++h) {
      const T uh = u(h);
      std::complex<T>* x = state.x.col(h).data();
      const std::complex<T>* a = a_bar_.col(h).data();
      const std::complex<T>* b = b_bar_.col(h).data();
      const std::complex<T>* c = c_.col(h).data();
      T acc = 0;
      for (Index m = 0; m < M; ++m) {
        x[m] = cmuladd(a[m], x[m], b[m] * uh);  // Abar x + Bbar u
        acc += re_mul(c[m], x[m]);
      }
      y(h) = 2 * acc + p_.D(h) * uh;
    }
  }

 private:
  /// y = K * u + D .* u with the cached spectrum for u's length.
  SSM_NOINLINE Sequence<T> convolve(const Eigen::Ref<const Sequence<T>>& u) const {
    Sequence<T> y = causal_convolution(u, *kernel_spectrum(u.rows()));
    y.noalias() += u * p_.D.asDiagonal();
    return y;
  }

  void check_state(const State& state, const char* where) const {
    check_shape(state.x, modes(), channels(), where, "state.x", "M x H (modes x channels)");
  }

  /// The recurrence over u (L x H), time-invariant (intervals == nullptr) or with per-step
  /// intervals. Time is processed in chunks so the scratch stays O(chunk x M) per thread.
  SSM_NOINLINE Sequence<T> run(const Eigen::Ref<const Sequence<T>>& u, const VectorX<double>* intervals, State& state) const {
    const Index L = u.rows(), H = channels(), M = modes();
    Sequence<T> y(L, H);
    if (L == 0) return y;
    const Index chunk = std::min<Index>(L, std::max<Index>(256, (Index(1) << 16) / M));
    struct Scratch {
      MatrixXc<T> x, a;
    };
    const int team = detail::team_size(L * H * M > (Index(1) << 18), H);
    detail::PerThread<Scratch> scratch(team, [&] { return Scratch{MatrixXc<T>(chunk, M), MatrixXc<T>(intervals ? chunk : 0, M)}; });
    detail::RegionErrors errors;
#if defined(_OPENMP)
#pragma omp parallel num_threads(team) if (team > 1)
#endif
    {
      MatrixXc<T>& x = scratch.local().x;
      MatrixXc<T>& a = scratch.local().a;
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (Index h = 0; h < H; ++h) errors.run([&] {
        for (Index t0 = 0; t0 < L; t0 += chunk) {
          const Index n = std::min(chunk, L - t0);
          if (intervals) {
            const double dt_h = std::exp(double(p_.log_dt(h)));
            for (Index m = 0; m < M; ++m) {
              const std::complex<double> Ahm(p_.Lambda(h, m)), Bhm(p_.B(h, m));
              for (Index t = 0; t < n; ++t) {
                std::complex<double> ab, bb;
                detail::discretize_mode(Ahm, Bhm, dt_h * (*intervals)(t0 + t), p_.discretization, ab, bb);
                a(t, m) = std::complex<T>(ab);
                x(t, m) = std::complex<T>(bb) * u(t0 + t, h);
              }
            }
            diagonal_scan_varying_inplace(a.topRows(n), x.topRows(n), state.x.col(h));
          } else {
            for (Index m = 0; m < M; ++m) {
              const T br = b_bar_(m, h).real(), bi = b_bar_(m, h).imag();
              T* __restrict xm = reinterpret_cast<T*>(x.col(m).data());  // (re, im) pairs
              const T* __restrict ut = u.data() + h * u.outerStride() + t0;
              for (Index t = 0; t < n; ++t) {
                xm[2 * t] = br * ut[t];
                xm[2 * t + 1] = bi * ut[t];
              }
            }
            diagonal_scan_inplace(a_bar_.col(h), x.topRows(n), state.x.col(h));
          }
          // Restrict-qualified raw loops: the compiler may then vectorise them (y and x never overlap).
          T* __restrict yh = y.col(h).data() + t0;
          const T* __restrict ut = u.data() + h * u.outerStride() + t0;
          const T dh = p_.D(h);
          for (Index t = 0; t < n; ++t) yh[t] = dh * ut[t];
          for (Index m = 0; m < M; ++m) {
            const T cr = 2 * c_(m, h).real(), ci = 2 * c_(m, h).imag();
            const T* __restrict xm = reinterpret_cast<const T*>(x.col(m).data());
            for (Index t = 0; t < n; ++t) yh[t] += cr * xm[2 * t] - ci * xm[2 * t + 1];
          }
        }
      });
    }
    errors.rethrow();
    return y;
  }

  Params p_;
  MatrixXc<T> a_bar_, b_bar_, c_;   // M x H, for the recurrence
  MatrixXc<double> log_a_bar_;      // H x M, for the kernel
  MatrixXc<double> log_a_bar_t_;    // M x H, for the final state of the convolution mode
  MatrixXc<double> b_bar_double_;   // M x H: Bbar in double, for the final state
  MatrixXc<double> weights_;        // H x M: C .* Bbar, for the kernel
  std::shared_ptr<SpectrumCache<T>> spectra_;  // shared by copies
};

SSM_EXTERN_TEMPLATE_FLOAT_DOUBLE(S4D)  // see SSM_NOINLINE in ssm/core/config.hpp

}  // namespace ssm
