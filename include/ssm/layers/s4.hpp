#pragma once
/// \file s4.hpp
/// The S4 layer (Gu, Goel, Re 2021): H independent single-input single-output SSMs with a DPLR state
/// matrix, bilinear discretisation, and a skip term:
///
///   x_k = Abar x_{k-1} + Bbar u_k,   y_k = 2 Re(C x_k) + D u_k,    per channel h,
///
/// over M = N/2 complex modes (one of each conjugate pair; the real system has N states). Continuous
/// A = diag(Lambda) - P P^* in the real-linear sense documented in `DPLRDiscrete` (discretize.hpp).
///
/// Two modes read the same `S4Params` (the layer concept, ssm/core/layer.hpp):
/// - convolution: y = K * u + D u with the kernel K of length L (kernels/cauchy.hpp), or of length
///   min(L, kernel_length) zero-padded when `S4Params::kernel_length` is set (the reference's l_max), whose
///   padded spectrum is cached per input length, so repeated calls at one L cost two FFTs per channel.
///   From a state it also returns the final state x_{L-1} = Abar^L x0 + sum_k Abar^k Bbar u_{L-1-k} and
///   adds the free response 2 Re(C Abar^{t+1} x0), both by blocked sums of powers of the real 2M x 2M
///   matrix of Abar (kernels/state_sums.hpp);
/// - recurrence: `step` (one time step of all channels, O(N rank) each, no allocation) and
///   `forward(u, state, Mode::recurrence)` (a whole L x H sequence from a caller-owned `State`).
///
/// Example:
/// \code
///   std::mt19937_64 gen(0);
///   auto layer = ssm::S4<float>::initialise(64, 64, ssm::hippo::Measure::legs, gen);
///   ssm::Sequence<float> y = layer.forward(u);           // u: L x 64, convolution mode
///   auto state = layer.initial_state();
///   ssm::Sequence<float> y2 = layer.forward(u, state);   // same y; state is now x_{L-1}: stream on from it
///   Eigen::VectorXf out(64);
///   layer.step(next_input, state, out);                  // one more sample
/// \endcode
///
/// Loading a state-spaces/s4 checkpoint: its SSMKernelDPLR stores C_tilde = C (I - Abar^{l_kernel}) in the
/// C parameter (its buffer `l_kernel` says for which length), not C. Fill the struct with the checkpoint's
/// arrays, then recover C:
/// \code
///   ssm::S4Params<float> p = ...;             // Lambda, P, B, log_dt, D from the checkpoint; p.C = its C_tilde
///   p.C = ssm::S4<float>::c_from_c_tilde(p, l_kernel);
///   p.kernel_length = l_max;                  // the reference layer's l_max, if it was built with one
///   ssm::S4<float> layer(p);
/// \endcode

#include "ssm/core/causal_convolution.hpp"
#include "ssm/core/complex_arith.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/layer.hpp"
#include "ssm/core/parallel.hpp"
#include "ssm/core/spectrum_cache.hpp"
#include "ssm/core/types.hpp"
#include "ssm/discretize.hpp"
#include "ssm/hippo.hpp"
#include "ssm/kernels/cauchy.hpp"
#include "ssm/kernels/state_sums.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

namespace ssm {

/// The parameters of an S4 layer in their physical meaning (the reference's names and layout, with
/// the reference's (rank, H, N/2) P as a vector of `rank` H x M matrices). H channels, M = N/2 modes.
template <class T>
struct S4Params {
  MatrixXc<T> Lambda;  ///< H x M: diagonal part of A, Re < 0 (eigenvalues of the normal part)
  LowRank<T> P;        ///< rank x (H x M): P[r](h, n), the low-rank factor, A = diag(Lambda) - P P^*
  MatrixXc<T> B;       ///< H x M: input vector
  MatrixXc<T> C;       ///< H x M: output vector (the true C; C (I - Abar^L) is derived per length)
  VectorX<T> D;        ///< H: skip connection, y += D u
  VectorX<T> log_dt;   ///< H: log of the step size, dt = exp(log_dt)
  /// Longest kernel the convolution mode uses, as the reference's FFTConv built with l_max: `forward` on an
  /// input of length L convolves with K[0 .. Lk) for Lk = min(L, kernel_length) and zero beyond (so the
  /// response to an impulse stops after Lk samples). 0 (the default) means unlimited: Lk = L. Only the
  /// convolution mode is truncated: the recurrence (`step`, `forward(u, state)`) runs the full system and
  /// agrees with `forward` only when L <= kernel_length (or kernel_length = 0). >= 0.
  Index kernel_length = 0;

  Index channels() const { return Lambda.rows(); }
  Index modes() const { return Lambda.cols(); }
  Index rank() const { return Index(P.size()); }
  /// dt = exp(log_dt), H entries.
  VectorX<T> dt() const {
    return log_dt.unaryExpr([](T v) { return std::exp(v); });  // std::exp: underflow gives 0 on every ISA
  }

  /// The same parameters in scalar U (each value rounded to U).
  template <class U>
  S4Params<U> cast() const {
    S4Params<U> out;
    out.Lambda = Lambda.template cast<std::complex<U>>();
    for (const auto& p : P) out.P.push_back(p.template cast<std::complex<U>>());
    out.B = B.template cast<std::complex<U>>();
    out.C = C.template cast<std::complex<U>>();
    out.D = D.template cast<U>();
    out.log_dt = log_dt.template cast<U>();
    out.kernel_length = kernel_length;
    return out;
  }
};

/// An S4 layer over scalar T (float or double). Immutable after construction: the derived quantities
/// (discrete system, per-length kernel spectra) are caches of the parameters, shared by every call;
/// const member functions are safe to call from several threads.
template <class T>
class S4 {
  static_assert(is_supported_scalar_v<T>, "T must be float or double");

 public:
  using Scalar = T;
  using Params = S4Params<T>;

  /// Recurrent state of one stream: the M complex modes of every channel, x.col(h) for channel h
  /// (M x H, so each channel's modes are contiguous), and scratch so that `step` allocates nothing.
  struct State {
    MatrixXc<T> x;       ///< M x H
    VectorX<T> scratch;  ///< 2 rank reals
    using scalar_type = T;  ///< float or double: the real type of the values
    static constexpr const char* kind = "S4";
    /// The arrays that carry the stream (not the scratch), for io::save_state / io::restore_state.
    template <class Visitor>
    void visit(Visitor& v) {
      v("x", x);
    }
    /// Back to the zero state (keeps the memory).
    void reset() { x.setZero(); }
  };

  /// Validates `params` (shapes H x M, rank >= 1, Re(Lambda) < 0, finite, D and log_dt with H entries)
  /// and discretises the recurrence. Throws ssm::error naming the bad field.
  SSM_NOINLINE explicit S4(Params params) : params_(std::move(params)) {
    const char* where = "S4";
    const Index H = params_.channels(), M = params_.modes();
    check(H >= 1 && M >= 1, where, "Lambda", "H x M with H, M >= 1", shape_string(H, M));
    check_shape(params_.C, H, M, where, "C", "H x M, the shape of Lambda");
    check_finite(params_.C, where, "C");
    check_size(params_.D, H, where, "D", "one per channel");
    check_finite(params_.D, where, "D");
    check_size(params_.log_dt, H, where, "log_dt", "one per channel");
    check_finite(params_.log_dt, where, "log_dt");
    check(params_.kernel_length >= 0, where, "kernel_length", ">= 0 (0: unlimited)",
          ssm::detail::concat(params_.kernel_length));
    dt_ = params_.dt();
    check_dplr(params_.Lambda, params_.P, params_.B, dt_, where);
    discrete_ = discretize_dplr(params_.Lambda, params_.P, params_.B, dt_);
    C_by_channel_ = params_.C.transpose();
  }

  /// An S4 layer initialised from HiPPO: Lambda, P, B from the NPLR form of `measure` (B clipped as the
  /// reference), the same for every channel; dt log-uniform in [dt_min, dt_max]; C complex standard normal
  /// scaled by 1/sqrt2 per part (unit variance); D standard normal. Deterministic given `gen`, which is drawn
  /// from in this order: H values for dt, then C (real and imaginary part of each entry, mode by mode, channel
  /// by channel), then D. The reference bounds Re(Lambda) <= -1e-4 (FouT has Re = 0), and so does this.
  /// rank 0 takes the measure's own rank (`hippo::nplr`).
  SSM_NOINLINE static S4 initialise(Index H, Index N, hippo::Measure measure, std::mt19937_64& gen, double dt_min = 1e-3,
                       double dt_max = 1e-1, Index rank = 0) {
    check(H >= 1, "S4::initialise", "H", ">= 1", ssm::detail::concat(H));
    const hippo::NPLR form = hippo::nplr(measure, N, rank);
    const Index M = N / 2, r = form.P.rows();
    Params p;
    p.Lambda.resize(H, M);
    p.B.resize(H, M);
    p.P.assign(std::size_t(r), MatrixXc<T>(H, M));
    for (Index h = 0; h < H; ++h)
      for (Index n = 0; n < M; ++n) {
        const Complex<double> w = form.W(n);
        p.Lambda(h, n) = Complex<T>(T(std::min(w.real(), -1e-4)), T(std::min(w.imag(), -1e-4)));
        p.B(h, n) = Complex<T>(form.B(n));
        for (Index q = 0; q < r; ++q) p.P[std::size_t(q)](h, n) = Complex<T>(form.P(q, n));
      }
    const VectorX<double> dt = hippo::log_uniform_dt(H, dt_min, dt_max, gen);
    p.log_dt = dt.array().log().matrix().template cast<T>();
    std::normal_distribution<double> normal(0.0, 1.0);
    p.C.resize(H, M);
    for (Index n = 0; n < M; ++n)
      for (Index h = 0; h < H; ++h)
        p.C(h, n) = Complex<T>(T(normal(gen) / std::sqrt(2.0)), T(normal(gen) / std::sqrt(2.0)));
    p.D.resize(H);
    for (Index h = 0; h < H; ++h) p.D(h) = T(normal(gen));
    return S4(std::move(p));
  }

  /// The true C from a reference checkpoint's C_tilde, H x M: `p.C` holds C_tilde = C (I - Abar^L) for
  /// L = `l_kernel` (the reference's `l_kernel` buffer; 0 means C was never converted and is returned as is),
  /// the other fields are the layer's parameters. Solves (I - G^L)^T f = f_tilde per channel in double,
  /// with G the real 2M x 2M matrix of Abar and f = 2 [Re C, -Im C] the real row of x -> 2 Re(C x) (see
  /// `kernels::dplr_c_from_c_tilde`). Inverse of `c_tilde(L)` up to rounding times cond(I - G^L).
  /// Throws ssm::error on invalid parameters, l_kernel < 0, or, naming the channel, when I - Abar^L is
  /// numerically singular (reciprocal condition <= `min_rcond`): a mode that barely decays over L steps.
  SSM_NOINLINE static MatrixXc<T> c_from_c_tilde(const Params& p_with_c_tilde, Index l_kernel, double min_rcond = 1e-12) {
    const char* where = "S4::c_from_c_tilde";
    const Params& p = p_with_c_tilde;
    check(p.channels() >= 1 && p.modes() >= 1, where, "Lambda", "H x M with H, M >= 1",
          shape_string(p.channels(), p.modes()));
    check_shape(p.C, p.channels(), p.modes(), where, "C", "H x M (the checkpoint's C_tilde), the shape of Lambda");
    check_finite(p.C, where, "C");
    check_size(p.log_dt, p.channels(), where, "log_dt", "one per channel");
    check_finite(p.log_dt, where, "log_dt");
    check(l_kernel >= 0, where, "l_kernel", ">= 0", ssm::detail::concat(l_kernel));
    LowRank<double> P;
    for (const auto& q : p.P) P.push_back(q.template cast<Complex<double>>());
    const VectorX<double> dt = p.log_dt.template cast<double>().unaryExpr([](double v) { return std::exp(v); });
    const DPLRDiscrete<double> d = discretize_dplr<double>(p.Lambda.template cast<Complex<double>>(), P,
                                                           p.B.template cast<Complex<double>>(), dt);
    return kernels::dplr_c_from_c_tilde<double>(d, p.C.template cast<Complex<double>>(), l_kernel, min_rcond)
        .template cast<Complex<T>>();
  }

  const Params& params() const { return params_; }
  Index channels() const { return params_.channels(); }
  Index modes() const { return params_.modes(); }
  Index rank() const { return params_.rank(); }
  /// The discrete recurrence (bilinear, Woodbury-factored) the recurrent mode runs.
  const DPLRDiscrete<T>& discrete() const { return discrete_; }

  /// C_tilde = C (I - Abar^L), H x M, computed in double.
  SSM_NOINLINE MatrixXc<T> c_tilde(Index L) const {
    check(L >= 1, "S4::c_tilde", "L", ">= 1", ssm::detail::concat(L));
    return kernels::dplr_c_tilde<double>(discrete_double(), params_.C.template cast<Complex<double>>(), L)
        .template cast<Complex<T>>();
  }

  /// The convolution kernel of length L, L x H: K_l = 2 Re(C Abar^l Bbar) (no D term).
  SSM_NOINLINE MatrixX<T> kernel(Index L) const {
    check(L >= 1, "S4::kernel", "L", ">= 1", ssm::detail::concat(L));
    return kernels::dplr_kernel(params_.Lambda, params_.P, params_.B, c_tilde(L), dt_, L);
  }

  /// Kernel taps `forward` uses for an input of length L: min(L, kernel_length), or L when kernel_length = 0.
  Index convolution_length(Index L) const {
    return params_.kernel_length > 0 ? std::min(L, params_.kernel_length) : L;
  }

  /// The padded spectrum `forward` uses for inputs of length L: of kernel(convolution_length(L)), zero
  /// beyond. Made once per L and kept in `spectrum_cache()` (shared by copies of the layer; keyed by L alone:
  /// kernel_length is fixed for the layer). An entry holds (n/2 + 1) x H complex values, n the FFT size
  /// >= 2L: 33.5 MB at H = 256, L = 16384 in float.
  SSM_NOINLINE std::shared_ptr<const KernelSpectrum<T>> kernel_spectrum(Index L) const {
    check(L >= 1, "S4::kernel_spectrum", "L", ">= 1", ssm::detail::concat(L));
    return cache_->spectra.get_or_make(L, [&] { return make_kernel_spectrum<T>(kernel(convolution_length(L)), L); });
  }

  /// The per-length spectrum cache: bounded by a byte budget (`SpectrumCache::default_budget` unless set),
  /// least recently used lengths evicted first; `clear()`, `bytes()`, `set_budget()`. (The layer also keeps,
  /// once made, the double discrete system and the state-sum powers: 2 (2M)^2 + O(M rank) doubles per channel.)
  SpectrumCache<T>& spectrum_cache() const { return cache_->spectra; }

  /// Convolution mode from the zero state: u is L x H (rows time), returns y = K * u + D u, L x H, with K the
  /// kernel truncated to convolution_length(L) taps (all L unless `S4Params::kernel_length` limits it).
  Sequence<T> forward(const Eigen::Ref<const Sequence<T>>& u) const {
    check(u.cols() == channels(), "S4::forward", "u",
          ssm::detail::concat("L x ", channels(), " (one column per channel)"), shape_string(u.rows(), u.cols()));
    if (u.rows() == 0) return Sequence<T>(0, channels());
    return convolve(u);
  }

  /// A zero state for one stream.
  State initial_state() const {
    State s;
    s.x = MatrixXc<T>::Zero(modes(), channels());
    s.scratch = VectorX<T>::Zero(2 * rank());
    return s;
  }

  /// The mode `forward(u, state)` runs for L steps when asked for `Mode::automatic`: the convolution from
  /// L = 4096 on (the measured crossover with a cached kernel, bench/RESULTS.md), the recurrence below it,
  /// and always the recurrence when `kernel_length` would truncate the convolution.
  Mode preferred_mode(Index L) const {
    return L >= 4096 && convolution_length(L) == L ? Mode::convolution : Mode::recurrence;
  }

  /// A whole sequence from `state` (x_{-1}): runs the L steps of u (L x H), returns y (L x H) and leaves x_{L-1}
  /// in `state`, so a sequence cut into chunks gives the same outputs and final state as one pass. Both modes
  /// give the same y and state up to rounding:
  /// - recurrence: `step` after `step`, channels in parallel with OpenMP;
  /// - convolution: y = K * u + D u + 2 Re(C Abar^{t+1} x0), x_{L-1} = Abar^L x0 + sum_k Abar^k Bbar u_{L-1-k},
  ///   the last two in double by blocked powers of Abar (its real 2M x 2M matrix and Abar^64 are made once
  ///   per layer on first use: 2 (2M)^2 doubles per channel). Needs the untruncated kernel: with
  ///   kernel_length < L it throws.
  SSM_NOINLINE Sequence<T> forward(const Eigen::Ref<const Sequence<T>>& u, State& state, Mode mode = Mode::automatic) const {
    const char* where = "S4::forward";
    check(u.cols() == channels(), where, "u", ssm::detail::concat("L x ", channels(), " (one column per channel)"),
          shape_string(u.rows(), u.cols()));
    check_state(state, where);
    const Index L = u.rows(), H = channels(), M = modes();
    if (mode == Mode::automatic) mode = preferred_mode(L);
    if (mode == Mode::recurrence || L == 0) return run_recurrence(u, state);
    check(convolution_length(L) == L, where, "mode",
          ssm::detail::concat("the recurrence for L > kernel_length = ", params_.kernel_length,
                              " (a truncated kernel has no state)"),
          ssm::detail::concat("convolution with L = ", L));
    Sequence<T> y = convolve(u);
    const std::vector<ChannelPowers>& powers = channel_powers();
    VectorX<double> x0(2 * M);
    for (Index h = 0; h < H; ++h) {
      const ChannelPowers& cp = powers[std::size_t(h)];
      for (Index n = 0; n < M; ++n) {
        x0(n) = double(state.x(n, h).real());
        x0(M + n) = double(state.x(n, h).imag());
      }
      if (!x0.isZero(0)) cp.powers.free_response(cp.c, x0, L, y.col(h).data(), 1);
      const VectorX<double> x = cp.powers.final_state(cp.b, u.col(h).data(), 1, L, x0);
      for (Index n = 0; n < M; ++n) state.x(n, h) = Complex<T>(T(x(n)), T(x(M + n)));
    }
    return y;
  }

  /// One time step of every channel: x <- Abar x + Bbar u, y = 2 Re(C x) + D u. `u` and `y` have H entries
  /// (contiguous or strided: a row of an L x H sequence works); `y` may alias `u`. O(N rank) per channel;
  /// allocates nothing (shapes are checked every call, messages built only on failure).
  SSM_NOINLINE void step(const Eigen::Ref<const VectorX<T>, 0, Eigen::InnerStride<>>& u, State& state,
            Eigen::Ref<VectorX<T>, 0, Eigen::InnerStride<>> y) const {
    const char* where = "S4::step";
    if (u.size() != channels()) check_size(u, channels(), where, "u", "H");
    if (y.size() != channels()) check_size(y, channels(), where, "y", "H");
    check_state(state, where);
    for (Index h = 0; h < channels(); ++h) {
      Complex<T>* x = state.x.col(h).data();
      const T uh = u(h);
      discrete_.step(h, x, uh, state.scratch.data());
      y(h) = output(h, x) + params_.D(h) * uh;
    }
  }

 private:
  /// What the convolution mode needs for states, per channel, in the real coordinates [Re x; Im x]:
  /// the powers of Abar's 2M x 2M matrix, Bbar, and the output row c with y = c x = 2 Re(C x).
  struct ChannelPowers {
    kernels::DenseBlockPowers powers;
    VectorX<double> b;      ///< 2M: [Re Bbar; Im Bbar]
    Eigen::RowVectorXd c;   ///< 2M: [2 Re C, -2 Im C]
  };

  struct Cache {
    std::mutex mutex;  // guards the two lazily made members below (the spectra have their own lock)
    SpectrumCache<T> spectra;
    std::shared_ptr<const DPLRDiscrete<double>> discrete_double;
    std::shared_ptr<const std::vector<ChannelPowers>> powers;
  };

  /// y = K * u + D u with the cached spectrum for u's length.
  SSM_NOINLINE Sequence<T> convolve(const Eigen::Ref<const Sequence<T>>& u) const {
    Sequence<T> y = causal_convolution(u, *kernel_spectrum(u.rows()));
    y.noalias() += u * params_.D.asDiagonal();
    return y;
  }

  /// The recurrence over u from `state`, channels in parallel.
  SSM_NOINLINE Sequence<T> run_recurrence(const Eigen::Ref<const Sequence<T>>& u, State& state) const {
    const Index L = u.rows(), H = channels();
    Sequence<T> y(L, H);
    const int team = detail::team_size(L * modes() * H > 65536, H);
    detail::PerThread<VectorX<T>> scratch(team, [&] { return VectorX<T>(2 * rank()); });
#if defined(_OPENMP)
#pragma omp parallel num_threads(team) if (team > 1)
#endif
    {
      T* s = scratch.local().data();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (Index h = 0; h < H; ++h) {  // nothing here allocates or throws
        Complex<T>* x = state.x.col(h).data();
        for (Index t = 0; t < L; ++t) {
          const T ut = u(t, h);
          discrete_.step(h, x, ut, s);
          y(t, h) = output(h, x) + params_.D(h) * ut;
        }
      }
    }
    return y;
  }

  /// The per-channel powers of the convolution mode's states, made on first use (under the cache's lock).
  SSM_NOINLINE const std::vector<ChannelPowers>& channel_powers() const {
    const DPLRDiscrete<double>& d = discrete_double();
    std::lock_guard<std::mutex> lock(cache_->mutex);
    if (!cache_->powers) {
      const Index H = channels(), M = modes();
      std::vector<ChannelPowers> all;
      all.reserve(std::size_t(H));
      std::vector<Complex<double>> x(static_cast<std::size_t>(M));
      std::vector<double> scratch(static_cast<std::size_t>(2 * rank()));
      for (Index h = 0; h < H; ++h) {
        std::fill(x.begin(), x.end(), Complex<double>(0));
        d.step(h, x.data(), 1.0, scratch.data());  // Bbar: one step of a unit input from zero
        VectorX<double> b(2 * M);
        Eigen::RowVectorXd c(2 * M);
        for (Index n = 0; n < M; ++n) {
          b(n) = x[std::size_t(n)].real();
          b(M + n) = x[std::size_t(n)].imag();
          c(n) = 2.0 * double(params_.C(h, n).real());
          c(M + n) = -2.0 * double(params_.C(h, n).imag());
        }
        all.push_back(ChannelPowers{kernels::DenseBlockPowers(dplr_transition_real(d, h)), std::move(b), std::move(c)});
      }
      cache_->powers = std::make_shared<const std::vector<ChannelPowers>>(std::move(all));
    }
    return *cache_->powers;
  }

  void check_state(const State& state, const char* where) const {
    check_shape(state.x, modes(), channels(), where, "state.x", "M x H (from initial_state())");
    check_size(state.scratch, 2 * rank(), where, "state.scratch", "2 rank (from initial_state())");
  }

  /// 2 Re(C x) for channel h.
  T output(Index h, const Complex<T>* x) const {
    const Complex<T>* c = C_by_channel_.col(h).data();
    T acc = 0;
    for (Index n = 0; n < modes(); ++n) acc += re_mul(c[n], x[n]);
    return 2 * acc;
  }

  /// The discrete system in double (for C_tilde and the convolution mode's states), made on first use.
  SSM_NOINLINE const DPLRDiscrete<double>& discrete_double() const {
    std::lock_guard<std::mutex> lock(cache_->mutex);
    if (!cache_->discrete_double) {
      LowRank<double> P;
      for (const auto& p : params_.P) P.push_back(p.template cast<Complex<double>>());
      cache_->discrete_double = std::make_shared<const DPLRDiscrete<double>>(
          discretize_dplr<double>(params_.Lambda.template cast<Complex<double>>(), P,
                          params_.B.template cast<Complex<double>>(), dt_.template cast<double>()));
    }
    return *cache_->discrete_double;
  }

  Params params_;
  VectorX<T> dt_;
  DPLRDiscrete<T> discrete_;
  MatrixXc<T> C_by_channel_;  // M x H copy of C: each channel's modes contiguous for the recurrence
  std::shared_ptr<Cache> cache_ = std::make_shared<Cache>();
};

SSM_EXTERN_TEMPLATE_FLOAT_DOUBLE(S4)  // see SSM_NOINLINE in ssm/core/config.hpp

}  // namespace ssm
