// The selective scan: the five golden cases of the reference selective_scan_ref, a direct long-double
// recurrence for every option and unusual state sizes, chunked runs, float against double, bad input,
// operands read in place or rearranged (same bits), and the in-place form allocating nothing.
#include "allocation_guard.hpp"  // counts allocations: the step tests prove there are none

#include "test_support.hpp"

#include "ssm/layers/selective_scan.hpp"

#include <fstream>

// The kernel's internals checked below, by the names the tests use (ssm::test has a detail namespace
// of its own, which would hide ssm::detail).
namespace ssm::test::detail {
using ssm::detail::fast_exp;
using ssm::detail::fast_log1p_nonnegative;
using ssm::detail::scan_softplus;
#ifdef SSM_SCAN_DISPATCH
using ssm::detail::exp_avx512_array;
using ssm::detail::gate_outputs_avx512;
using ssm::detail::scan_isa;
using ssm::detail::scan_isa_cap;
using ssm::detail::softplus_deltas_avx512;
#endif
}  // namespace ssm::test::detail

namespace ssm::test {
namespace {

template <class T>
class SelectiveScanTest : public ::testing::Test {};
TYPED_TEST_SUITE(SelectiveScanTest, Scalars);

/// Channel-major golden arrays in the library's layout.
template <class E>
MatrixX<E> per_step_from_golden(const io::NpyArray& a, Index b) {  // (batch, N, L) -> L x N
  return batch_slab<E>(a, b).transpose();
}

template <class E>
MatrixX<E> grouped_from_golden(const io::NpyArray& a, Index b) {  // (batch, G, N, L) -> L x (G N)
  const Index G = a.shape[1], N = a.shape[2], L = a.shape[3];
  const auto flat = a.values<E>();
  MatrixX<E> m(L, G * N);
  for (Index g = 0; g < G; ++g)
    for (Index n = 0; n < N; ++n)
      for (Index t = 0; t < L; ++t) m(t, g * N + n) = flat[std::size_t(((b * G + g) * N + n) * L + t)];
  return m;
}

template <class T>
MatrixXc<T> interleaved_complex_from_golden(const io::NpyArray& a, Index b) {  // (batch, N, 2L) (re, im) -> L x N
  const Index N = a.shape[1], L = a.shape[2] / 2;
  const auto flat = a.values<T>();
  MatrixXc<T> m(L, N);
  for (Index n = 0; n < N; ++n)
    for (Index t = 0; t < L; ++t) {
      const std::size_t base = std::size_t((b * N + n) * 2 * L + 2 * t);
      m(t, n) = std::complex<T>(flat[base], flat[base + 1]);
    }
  return m;
}

bool has_array(const std::string& name, const std::string& array) {
  return std::ifstream(data_path(name + "/" + array + ".npy")).good();
}

bool case_softplus(const std::string& name) {
  std::ifstream in(data_path(name + "/case.json"));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.find("\"delta_softplus\": true") != std::string::npos;
}

/// Runs one golden case for every batch entry and compares out and last_state to 1e-5 relative.
template <class T, class E>
void check_golden_case(const std::string& name) {
  const auto u = golden(name, "u"), delta = golden(name, "delta"), Bg = golden(name, "B"), Cg = golden(name, "C");
  const MatrixX<E> A = golden(name, "A").matrix<E>();
  const Index batch = u.shape[0];
  const Index D = A.rows();
  for (Index b = 0; b < batch; ++b) {
    // The scan takes views: the values live here for the call.
    auto values = [&](const io::NpyArray& g) -> MatrixX<E> {
      if (g.shape.size() == 2) return g.matrix<E>();
      if (g.shape.size() == 4) return grouped_from_golden<E>(g, b);
      if constexpr (std::is_same_v<E, T>) {
        return per_step_from_golden<E>(g, b);
      } else {
        return interleaved_complex_from_golden<T>(g, b);
      }
    };
    auto scan_matrix = [&](const io::NpyArray& g, const MatrixX<E>& v) {
      if (g.shape.size() == 2) return ScanMatrix<E>::constant(v);
      if (g.shape.size() == 4) return ScanMatrix<E>::grouped(v, g.shape[1]);
      return ScanMatrix<E>::per_step(v);
    };
    const MatrixX<E> Bv = values(Bg), Cv = values(Cg);
    const MatrixX<T> Dv = has_array(name, "D") ? golden(name, "D").matrix<T>() : MatrixX<T>();
    const MatrixX<T> zv = has_array(name, "z") ? batch_as_LxH<T>(golden(name, "z"), b) : MatrixX<T>();
    const MatrixX<T> bias = has_array(name, "delta_bias") ? golden(name, "delta_bias").matrix<T>() : MatrixX<T>();
    SelectiveScanOptions<T, E> opt;
    opt.D = Dv;  // empty when absent: not given
    opt.z = zv;
    opt.delta_bias = bias;
    opt.delta_softplus = case_softplus(name);
    const auto r = selective_scan(batch_as_LxH<T>(u, b), batch_as_LxH<T>(delta, b), A, scan_matrix(Bg, Bv),
                                  scan_matrix(Cg, Cv), opt);
    SSM_EXPECT_NEAR_REL(r.out, batch_as_LxH<T>(golden(name, "out"), b), 1e-5) << name << " batch " << b;
    ASSERT_EQ(r.last_state.rows(), D);
    SSM_EXPECT_NEAR_REL(r.last_state, batch_slab<E>(golden(name, "last_state"), b), 1e-5) << name << " batch " << b;
  }
}

TYPED_TEST(SelectiveScanTest, GoldenRealConstantBC) {
  check_golden_case<TypeParam, TypeParam>("selective_scan_real_const_BC");
}
TYPED_TEST(SelectiveScanTest, GoldenRealPerStepBC) {
  check_golden_case<TypeParam, TypeParam>("selective_scan_real_var_BC");
}
TYPED_TEST(SelectiveScanTest, GoldenRealPerStepBCGated) {
  check_golden_case<TypeParam, TypeParam>("selective_scan_real_var_BC_gated");
}
TYPED_TEST(SelectiveScanTest, GoldenRealGroupedBC) {
  check_golden_case<TypeParam, TypeParam>("selective_scan_real_grouped_BC");
}
TYPED_TEST(SelectiveScanTest, GoldenComplexPerStepBC) {
  check_golden_case<TypeParam, std::complex<TypeParam>>("selective_scan_complex_var_BC");
}

using LD = long double;
using CLD = std::complex<long double>;

/// The recurrence written out directly, in long double, one channel and one step at a time.
template <class T, class E>
MatrixX<LD> direct_scan(const MatrixX<T>& u, const MatrixX<T>& delta, const MatrixX<E>& A, const ScanMatrix<E>& B,
                        const ScanMatrix<E>& C, const SelectiveScanOptions<T, E>& opt,
                        Eigen::Matrix<CLD, Eigen::Dynamic, Eigen::Dynamic>& state) {
  const Index L = u.rows(), D = u.cols(), N = A.cols();
  auto coef = [&](const ScanMatrix<E>& m, Index d, Index t, Index n) -> CLD {
    const Index g = m.kind == ScanMatrix<E>::Kind::grouped ? d / (D / m.groups) : 0;
    const E v = m.kind == ScanMatrix<E>::Kind::constant ? m.values(d, n) : m.values(t, g * N + n);
    return CLD(std::complex<T>(v));
  };
  constexpr bool cplx = !std::is_same_v<E, T>;
  state.resize(D, N);
  for (Index d = 0; d < D; ++d)
    for (Index n = 0; n < N; ++n)
      state(d, n) = opt.initial_state.size() ? CLD(std::complex<T>(opt.initial_state(d, n))) : CLD(0);
  MatrixX<LD> out(L, D);
  for (Index d = 0; d < D; ++d) {
    for (Index t = 0; t < L; ++t) {
      LD dt = LD(delta(t, d)) + (opt.delta_bias.size() ? LD(opt.delta_bias[d]) : 0);
      if (opt.delta_softplus) dt = dt > 20 ? dt : std::log1p(std::exp(dt));
      CLD y = 0;
      for (Index n = 0; n < N; ++n) {
        const CLD a(std::complex<T>(A(d, n)));
        state(d, n) = std::exp(dt * a) * state(d, n) + dt * LD(u(t, d)) * coef(B, d, t, n);
        y += coef(C, d, t, n) * state(d, n);
      }
      LD o = cplx ? 2 * y.real() : y.real();
      if (opt.D.size()) o += LD(opt.D[d]) * LD(u(t, d));
      if (opt.z.size()) {
        const LD z = opt.z(t, d);
        o *= z / (1 + std::exp(-z));
      }
      out(t, d) = o;
    }
  }
  return out;
}

template <class E>
MatrixX<E> random_coef(Index rows, Index cols, std::mt19937_64& gen) {
  if constexpr (Eigen::NumTraits<E>::IsComplex) {
    return random_complex<typename E::value_type>(rows, cols, gen);
  } else {
    return random_normal<E>(rows, cols, gen);
  }
}

/// A stable A: negative real parts (and arbitrary imaginary parts when complex).
template <class E>
MatrixX<E> random_stable_A(Index D, Index N, std::mt19937_64& gen) {
  MatrixX<E> A = random_coef<E>(D, N, gen);
  for (Index i = 0; i < A.size(); ++i) {
    if constexpr (Eigen::NumTraits<E>::IsComplex) {
      A(i) = E(-std::abs(A(i).real()) - 0.1f, A(i).imag() * 3);
    } else {
      A(i) = -std::abs(A(i)) - E(0.1);
    }
  }
  return A;
}

/// Every option at once, for several state sizes (including ones with no unrolled kernel) and
/// lengths that cross the kernel's internal step blocks, against the direct recurrence.
template <class T, class E>
void check_against_direct(Index N, Index L, Index D, int variant, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  const MatrixX<T> u = random_normal<T>(L, D, gen);
  const MatrixX<T> delta = random_normal<T>(L, D, gen);
  const MatrixX<E> A = random_stable_A<E>(D, N, gen);
  auto values = [&]() {
    switch (variant) {
      case 0: return random_coef<E>(D, N, gen);
      case 1: return random_coef<E>(L, N, gen);
      default: return random_coef<E>(L, 2 * N, gen);
    }
  };
  const MatrixX<E> Bv = values(), Cv = values();
  auto view = [&](const MatrixX<E>& v) {
    switch (variant) {
      case 0: return ScanMatrix<E>::constant(v);
      case 1: return ScanMatrix<E>::per_step(v);
      default: return ScanMatrix<E>::grouped(v, 2);
    }
  };
  const auto B = view(Bv), C = view(Cv);
  const MatrixX<T> skip = random_normal<T>(D, 1, gen), z = random_normal<T>(L, D, gen);
  MatrixX<T> bias = random_normal<T>(D, 1, gen);
  bias(0) = T(25);  // softplus threshold branch
  SelectiveScanOptions<T, E> opt;
  opt.D = skip;
  opt.z = z;
  opt.delta_bias = bias;
  opt.delta_softplus = variant != 1;
  if (variant == 1) {  // without softplus delta must stay positive to be meaningful
    MatrixX<T> pos = delta.cwiseAbs();
    const MatrixX<T> bias_abs = bias.cwiseAbs();
    opt.delta_bias = bias_abs;
    const MatrixX<E> x0 = random_coef<E>(D, N, gen);
    opt.initial_state = x0;
    Eigen::Matrix<CLD, Eigen::Dynamic, Eigen::Dynamic> state;
    const MatrixX<LD> expected = direct_scan<T, E>(u, pos, A, B, C, opt, state);
    const auto r = selective_scan(u, pos, A, B, C, opt);
    SSM_EXPECT_NEAR_REL(r.out, expected.cast<T>(), scalar_traits<T>::tolerance) << "N=" << N << " L=" << L;
    SSM_EXPECT_NEAR_REL(r.last_state, state.cast<std::complex<T>>().eval(), scalar_traits<T>::tolerance);
    return;
  }
  const MatrixX<E> x0 = random_coef<E>(D, N, gen);
  opt.initial_state = x0;
  Eigen::Matrix<CLD, Eigen::Dynamic, Eigen::Dynamic> state;
  const MatrixX<LD> expected = direct_scan<T, E>(u, delta, A, B, C, opt, state);
  const auto r = selective_scan(u, delta, A, B, C, opt);
  SSM_EXPECT_NEAR_REL(r.out, expected.cast<T>(), scalar_traits<T>::tolerance) << "N=" << N << " L=" << L;
  MatrixX<std::complex<T>> last = r.last_state.template cast<std::complex<T>>();
  SSM_EXPECT_NEAR_REL(last, state.cast<std::complex<T>>().eval(), scalar_traits<T>::tolerance);
}

TYPED_TEST(SelectiveScanTest, RealMatchesDirectRecurrence) {
  using T = TypeParam;
  std::uint64_t seed = 1;
  for (Index N : {1, 3, 4, 16, 33})
    for (int variant : {0, 1, 2}) check_against_direct<T, T>(N, N == 1 ? 2100 : 150, 4, variant, seed++);
  // Several lane groups, the last one partial; groups of B and C that fill whole lane groups (D / G =
  // 16) and ones that do not; and a state larger than the kernel's state chunk.
  for (int variant : {0, 1, 2}) check_against_direct<T, T>(16, 70, 38, variant, seed++);
  check_against_direct<T, T>(5, 40, 32, 2, seed++);
  check_against_direct<T, T>(70, 20, 9, 1, seed++);
  check_against_direct<T, T>(130, 20, 4, 2, seed++);
  // One step (a layer's step; fp32 with AVX-512 runs scan_step_avx512.hpp): full and partial lane
  // groups, B and C per step and grouped, states across the state chunk.
  for (int variant : {0, 1, 2}) check_against_direct<T, T>(16, 1, 38, variant, seed++);
  check_against_direct<T, T>(70, 1, 64, 2, seed++);
  check_against_direct<T, T>(3, 1, 5, 1, seed++);
}

#ifdef SSM_SCAN_DISPATCH
TYPED_TEST(SelectiveScanTest, EveryInstructionSetKernelMatchesDirectRecurrence) {
  // The kernel is compiled for the baseline, AVX2 and AVX-512; the CPU picks one. Run each the CPU
  // can run; a cap above what the CPU has would silently rerun a lower kernel, so report a skip instead.
  using T = TypeParam;
  std::uint64_t seed = 500;
  const int best = detail::scan_isa();  // no cap set: the best the CPU has
  for (int cap : {0, 1, 2}) {
    if (cap > best) break;
    detail::scan_isa_cap = cap;
    for (int variant : {0, 1, 2}) check_against_direct<T, T>(16, 90, 38, variant, seed++);
    check_against_direct<T, T>(5, 40, 20, 1, seed++);
  }
  detail::scan_isa_cap = -1;
  if (best < 2)
    GTEST_SKIP() << "this CPU has no " << (best < 1 ? "AVX2" : "AVX-512")
                 << ": its kernel was not run (only the ones below it were checked)";
}
#endif

TYPED_TEST(SelectiveScanTest, ComplexMatchesDirectRecurrence) {
  using T = TypeParam;
  std::uint64_t seed = 100;
  for (Index N : {1, 2, 8, 5})
    for (int variant : {0, 1, 2}) check_against_direct<T, std::complex<T>>(N, 130, 4, variant, seed++);
}

/// Two chunks, the second started from the first's final state, give the one-pass result.
template <class T, class E>
void check_chunked(std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  const Index L = 97, D = 6, N = 16, L1 = 40;
  const MatrixX<T> u = random_normal<T>(L, D, gen), delta = random_normal<T>(L, D, gen), z = random_normal<T>(L, D, gen);
  const MatrixX<E> A = random_stable_A<E>(D, N, gen);
  const MatrixX<E> B = random_coef<E>(L, N, gen), C = random_coef<E>(L, N, gen);
  const MatrixX<T> skip = random_normal<T>(D, 1, gen);
  SelectiveScanOptions<T, E> opt;
  opt.D = skip;
  opt.delta_softplus = true;
  opt.z = z;
  const auto whole = selective_scan(u, delta, A, ScanMatrix<E>::per_step(B), ScanMatrix<E>::per_step(C), opt);
  opt.z = z.topRows(L1);
  const auto first = selective_scan(u.topRows(L1), delta.topRows(L1), A, ScanMatrix<E>::per_step(B.topRows(L1)),
                                    ScanMatrix<E>::per_step(C.topRows(L1)), opt);
  opt.z = z.bottomRows(L - L1);
  opt.initial_state = first.last_state;
  const auto second =
      selective_scan(u.bottomRows(L - L1), delta.bottomRows(L - L1), A, ScanMatrix<E>::per_step(B.bottomRows(L - L1)),
                     ScanMatrix<E>::per_step(C.bottomRows(L - L1)), opt);
  MatrixX<T> joined(L, D);
  joined << first.out, second.out;
  // Identical arithmetic except that exp may take its scalar or its vector path at a block edge.
  SSM_EXPECT_NEAR_REL(joined, whole.out, 8 * double(scalar_traits<T>::epsilon));
  SSM_EXPECT_NEAR_REL(second.last_state, whole.last_state, 8 * double(scalar_traits<T>::epsilon));
}

TYPED_TEST(SelectiveScanTest, ChunkedRunContinuesExactly) {
  check_chunked<TypeParam, TypeParam>(5);
  check_chunked<TypeParam, std::complex<TypeParam>>(6);
}

TEST(SelectiveScan, FloatAgreesWithDouble) {
  // Float follows double to a few float roundings per step; the state forgets old roundings at the
  // rate exp(delta A), so the error does not grow with L. Documented bound: 2e-5 of max |out|.
  std::mt19937_64 gen(77);
  const Index L = 1000, D = 8, N = 16;
  const MatrixX<double> u = random_normal<double>(L, D, gen), delta = random_normal<double>(L, D, gen);
  const MatrixX<double> A = random_stable_A<double>(D, N, gen);
  const MatrixX<double> B = random_normal<double>(L, N, gen), C = random_normal<double>(L, N, gen);
  const MatrixX<double> skip = random_normal<double>(D, 1, gen), z = random_normal<double>(L, D, gen);
  SelectiveScanOptions<double> od;
  od.D = skip;
  od.z = z;
  od.delta_softplus = true;
  const auto rd = selective_scan(u, delta, A, ScanMatrix<double>::per_step(B), ScanMatrix<double>::per_step(C), od);
  const MatrixX<float> skip_f = skip.cast<float>(), z_f = z.cast<float>(), B_f = B.cast<float>(), C_f = C.cast<float>();
  SelectiveScanOptions<float> of{skip_f, z_f, {}, true, {}};
  // u, delta and A are taken as Eigen::Ref: the cast expressions are evaluated once.
  const auto rf = selective_scan(u.cast<float>(), delta.cast<float>(), A.cast<float>(), ScanMatrix<float>::per_step(B_f),
                                 ScanMatrix<float>::per_step(C_f), of);
  SSM_EXPECT_NEAR_REL(rf.out.cast<double>(), rd.out, scalar_traits<float>::tolerance);
  SSM_EXPECT_NEAR_REL(rf.last_state.cast<double>(), rd.last_state, scalar_traits<float>::tolerance);
}

TEST(SelectiveScan, SoftplusAndSiluFollowPyTorch) {
  EXPECT_EQ(softplus(25.0f), 25.0f);
  EXPECT_EQ(softplus(20.5), 20.5);
  EXPECT_NEAR(softplus(20.0), std::log1p(std::exp(20.0)), 1e-15);
  EXPECT_NEAR(softplus(0.0), std::log(2.0), 1e-15);
  EXPECT_NEAR(softplus(-30.0), std::exp(-30.0), 1e-25);
  EXPECT_NEAR(silu(1.5), 1.5 / (1 + std::exp(-1.5)), 1e-15);
  EXPECT_EQ(silu(0.0f), 0.0f);
}

TEST(SelectiveScan, EmptySequenceReturnsTheInitialState) {
  std::mt19937_64 gen(3);
  const MatrixX<double> A = random_stable_A<double>(3, 4, gen);
  const MatrixX<double> x0 = random_normal<double>(3, 4, gen), B = MatrixX<double>::Ones(3, 4), C(0, 4);
  SelectiveScanOptions<double> opt;
  opt.initial_state = x0;
  const auto r = selective_scan(MatrixX<double>(0, 3), MatrixX<double>(0, 3), A, ScanMatrix<double>::constant(B),
                                ScanMatrix<double>::per_step(C), opt);
  EXPECT_EQ(r.out.rows(), 0);
  EXPECT_EQ(r.last_state, x0);
}

/// Expects ssm::error whose message contains every fragment.
template <class F>
void expect_error(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const ssm::error& e) {
    const std::string msg = e.what();
    for (const char* frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << msg << " lacks " << frag;
  }
}

TYPED_TEST(SelectiveScanTest, BadInputsAreRejected) {
  using T = TypeParam;
  const Index L = 5, D = 4, N = 3;
  const MatrixX<T> u = MatrixX<T>::Ones(L, D), A = -MatrixX<T>::Ones(D, N);
  const MatrixX<T> ones_LN = MatrixX<T>::Ones(L, N), ones_L1N = MatrixX<T>::Ones(L + 1, N);
  const MatrixX<T> ones_L3N = MatrixX<T>::Ones(L, 3 * N);
  const auto B = ScanMatrix<T>::per_step(ones_LN);
  expect_error([&] { selective_scan(u, MatrixX<T>::Ones(L, D + 1), A, B, B); }, {"delta", "5 x 4", "5 x 5"});
  expect_error([&] { selective_scan(u, u, -MatrixX<T>::Ones(D + 1, N), B, B); }, {"A", "5 x 3"});
  expect_error([&] { selective_scan(u, u, A, ScanMatrix<T>::per_step(ones_L1N), B); }, {"B", "5 x 3", "6 x 3"});
  expect_error([&] { selective_scan(u, u, A, B, ScanMatrix<T>::constant(ones_LN)); }, {"C", "4 x 3", "D x N"});
  expect_error([&] { selective_scan(u, u, A, ScanMatrix<T>::grouped(ones_L3N, 3), B); },
               {"B", "dividing D = 4", "G = 3"});
  const VectorX<T> skip_long = VectorX<T>::Ones(D + 2), bias_short = VectorX<T>::Ones(1);
  const MatrixX<T> z_short = MatrixX<T>::Ones(L - 1, D), state_transposed = MatrixX<T>::Ones(N, D);
  SelectiveScanOptions<T> opt;
  opt.D = skip_long;
  expect_error([&] { selective_scan(u, u, A, B, B, opt); }, {"options.D", "6"});
  opt = {};
  opt.z = z_short;
  expect_error([&] { selective_scan(u, u, A, B, B, opt); }, {"options.z", "4 x 4"});
  opt = {};
  opt.initial_state = state_transposed;
  expect_error([&] { selective_scan(u, u, A, B, B, opt); }, {"options.initial_state", "3 x 4"});
  opt = {};
  opt.delta_bias = bias_short;
  expect_error([&] { selective_scan(u, u, A, B, B, opt); }, {"options.delta_bias"});
  // The in-place form: out and state must fit, and the state comes from its argument only.
  MatrixX<T> out(L, D), state = MatrixX<T>::Zero(D, N), out_short(L - 1, D), state_wide = MatrixX<T>::Zero(D, N + 1);
  expect_error([&] { selective_scan_into(u, u, A, B, B, {}, out_short, state); }, {"out", "5 x 4", "4 x 4"});
  expect_error([&] { selective_scan_into(u, u, A, B, B, {}, out, state_wide); }, {"state", "4 x 3", "4 x 4"});
  const MatrixX<T> x0 = MatrixX<T>::Zero(D, N);
  opt = {};
  opt.initial_state = x0;
  expect_error([&] { selective_scan_into(u, u, A, B, B, opt, out, state); }, {"options.initial_state", "empty"});
}

}  // namespace
}  // namespace ssm::test

namespace ssm::test {
namespace {

// The kernel's own exp, log1p and softplus (branch-free so that they vectorise), against the
// standard library over their whole range, including the special values.
TYPED_TEST(SelectiveScanTest, KernelExpMatchesStdExp) {
  using T = TypeParam;
  const double eps = double(std::numeric_limits<T>::epsilon());
  const double lo = std::is_same_v<T, float> ? -87.3 : -708.3, hi = std::is_same_v<T, float> ? 88.3 : 709.4;
  double worst = 0;
  for (int i = 0; i <= 200000; ++i) {
    const T v = T(lo + (hi - lo) * i / 200000.0);
    const double e = std::exp(double(v));
    worst = std::max(worst, std::abs(double(detail::fast_exp(v)) - e) / e);
  }
  EXPECT_LE(worst, 3 * eps);
  for (T v : {T(-0.0), T(0), T(1e-30), T(-1e-30)}) EXPECT_EQ(detail::fast_exp(v), T(1)) << v;
  EXPECT_EQ(detail::fast_exp(std::numeric_limits<T>::infinity()), std::numeric_limits<T>::infinity());
  EXPECT_EQ(detail::fast_exp(T(hi + 5)), std::numeric_limits<T>::infinity());
  EXPECT_EQ(detail::fast_exp(-std::numeric_limits<T>::infinity()), T(0));
  EXPECT_EQ(detail::fast_exp(T(lo - 5)), T(0));
  EXPECT_TRUE(std::isnan(detail::fast_exp(std::numeric_limits<T>::quiet_NaN())));
}

#ifdef SSM_SCAN_DISPATCH
TEST(SelectiveScan, Avx512KernelExpMatchesStdExp) {
  // The AVX-512 kernel's exp (vscalefps for 2^k): accurate over the normal range, correctly rounded
  // to 0 / subnormals below it and to +inf above it, and NaN-preserving.
  if (detail::scan_isa() < 2) GTEST_SKIP() << "this CPU has no AVX-512";
  const double eps = double(std::numeric_limits<float>::epsilon());
  std::vector<float> in, out;
  for (int i = 0; i <= 200001; ++i) in.push_back(float(-87.3 + (88.3 + 87.3) * i / 200001.0));
  out.resize(in.size());
  detail::exp_avx512_array(in.data(), out.data(), Index(in.size()));  // an odd count: the masked tail too
  double worst = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const double e = std::exp(double(in[i]));
    worst = std::max(worst, std::abs(double(out[i]) - e) / e);
  }
  EXPECT_LE(worst, 3 * eps);
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> special = {-0.0f, 0.0f, 1e-30f, inf, 88.8f, 1e30f, -inf, -104.0f, -1e30f, -95.0f,
                                      std::numeric_limits<float>::quiet_NaN()};
  std::vector<float> got(special.size());
  detail::exp_avx512_array(special.data(), got.data(), Index(special.size()));
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(got[i], 1.0f) << special[i];
  for (std::size_t i = 3; i < 6; ++i) EXPECT_EQ(got[i], inf) << special[i];
  for (std::size_t i = 6; i < 9; ++i) EXPECT_EQ(got[i], 0.0f) << special[i];
  // exp(-95) = 5.5e-42 is subnormal in float: kept to the subnormal's precision.
  EXPECT_NEAR(double(got[9]), std::exp(-95.0), 2e-45);
  EXPECT_GT(got[9], 0.0f);
  EXPECT_TRUE(std::isnan(got[10]));
}
#endif

#ifdef SSM_SCAN_DISPATCH
TEST(SelectiveScan, Avx512SoftplusAndGateMatchTheirFormulas) {
  // The AVX-512 kernel's softplus of the step sizes and its SiLU gate, against the formulas in
  // double, over odd lengths (the masked last register) and the special values.
  if (detail::scan_isa() < 2) GTEST_SKIP() << "this CPU has no AVX-512";
  const double eps = double(std::numeric_limits<float>::epsilon());
  std::vector<float> v;
  for (int i = 0; i <= 20001; ++i) v.push_back(float(-80.0 + 110.0 * i / 20001.0));
  const float bias = 0.25f;
  std::vector<float> dt(v.size());
  detail::softplus_deltas_avx512(v.data(), Index(v.size()), bias, dt.data());
  double worst = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const double x = double(v[i] + bias);
    const double expected = x > 20 ? x : std::log1p(std::exp(x));
    worst = std::max(worst, std::abs(double(dt[i]) - expected) / expected);
  }
  EXPECT_LE(worst, 4 * eps);
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> special = {inf, -inf, std::numeric_limits<float>::quiet_NaN(), 20.5f, -1e30f};
  std::vector<float> got(special.size());
  detail::softplus_deltas_avx512(special.data(), Index(special.size()), 0.0f, got.data());
  EXPECT_EQ(got[0], inf);
  EXPECT_EQ(got[1], 0.0f);
  EXPECT_TRUE(std::isnan(got[2]));
  EXPECT_EQ(got[3], 20.5f);
  EXPECT_EQ(got[4], 0.0f);

  std::mt19937_64 gen(3);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (Index T : {1, 15, 16, 17, 64}) {
    std::vector<float> u(T), z(T), out(T), expected(T);
    for (Index t = 0; t < T; ++t) {
      u[t] = normal(gen);
      z[t] = normal(gen);
      out[t] = normal(gen);
      const double y = double(out[t]) + 0.75 * double(u[t]);
      expected[t] = float(y * double(z[t]) / (1.0 + std::exp(-double(z[t]))));
    }
    detail::gate_outputs_avx512(u.data(), 0.75f, z.data(), T, out.data());
    for (Index t = 0; t < T; ++t) EXPECT_NEAR(out[t], expected[t], 8 * eps * std::abs(expected[t])) << T << " " << t;
  }
}
#endif

TEST(SelectiveScan, KernelSoftplusMatchesStdSoftplus) {
  const double eps = double(std::numeric_limits<float>::epsilon());
  double worst = 0;
  for (int i = 0; i <= 200000; ++i) {
    const float v = float(-80.0 + 110.0 * i / 200000.0);
    const double expected = v > 20 ? double(v) : std::log1p(std::exp(double(v)));
    worst = std::max(worst, std::abs(double(detail::scan_softplus(v)) - expected) / expected);
  }
  EXPECT_LE(worst, 4 * eps);
  EXPECT_EQ(detail::scan_softplus(20.5f), 20.5f);
  EXPECT_EQ(detail::scan_softplus(std::numeric_limits<float>::infinity()), std::numeric_limits<float>::infinity());
  EXPECT_EQ(detail::scan_softplus(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_TRUE(std::isnan(detail::scan_softplus(std::numeric_limits<float>::quiet_NaN())));
  for (float e : {0.0f, 1e-30f, 1e-8f, 0.5f, 1.0f, 3.0f, 1e6f, 1e30f})
    EXPECT_NEAR(detail::fast_log1p_nonnegative(e), std::log1p(double(e)), 4 * eps * std::log1p(double(e))) << e;
}

}  // namespace
}  // namespace ssm::test

namespace ssm::test {
namespace {

/// A D x N view of an N x D column-major matrix: channel d's N values contiguous (the kernel's layout).
template <class E>
Eigen::Map<const MatrixX<E>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>> channel_major(const MatrixX<E>& At) {
  return {At.data(), At.cols(), At.rows(), Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(1, At.rows())};
}

/// Every operand in the kernel's layout (read in place) and in another one (rearranged for the call),
/// for every kind of B and C: the results are the same to the bit.
template <class T>
void check_layouts(int variant, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  const Index L = 70, D = 38, N = 16, G = variant == 2 ? 2 : 1;
  const MatrixX<T> u = random_normal<T>(L, D, gen), delta = random_normal<T>(L, D, gen);
  const MatrixX<T> z = random_normal<T>(L, D, gen), A = random_stable_A<T>(D, N, gen);
  const MatrixX<T> skip = random_normal<T>(D, 1, gen), bias = random_normal<T>(D, 1, gen);
  const MatrixX<T> x0 = random_normal<T>(D, N, gen);
  const Index rows = variant == 0 ? D : L;
  const MatrixX<T> B = random_normal<T>(rows, G * N, gen), C = random_normal<T>(rows, G * N, gen);
  auto kind = [&](ScanView<T> v) {
    return variant == 0 ? ScanMatrix<T>::constant(v) : variant == 1 ? ScanMatrix<T>::per_step(v) : ScanMatrix<T>::grouped(v, G);
  };
  SelectiveScanOptions<T> opt;
  opt.D = skip;
  opt.z = z;
  opt.delta_bias = bias;
  opt.delta_softplus = true;
  opt.initial_state = x0;
  const auto expected = selective_scan(u, delta, A, kind(B), kind(C), opt);

  // In place: A channel-major, B and C row-major (B as the transpose of a column-major matrix).
  const MatrixX<T> At = A.transpose(), Bt = B.transpose();
  const RowMatrixX<T> C_rows = C;
  // Rearranged: z with time strided (row-major), D and delta_bias strided, state and out inside larger matrices.
  const RowMatrixX<T> z_rows = z;
  const MatrixX<T> skip_row = skip.transpose().replicate(3, 1);  // row 1 is a strided vector
  const VectorX<T> bias_spread = bias.replicate(1, 2).transpose().reshaped();  // bias[d] at 2 d
  const Eigen::Map<const VectorX<T>, 0, Eigen::InnerStride<2>> bias_strided(bias_spread.data(), D);
  MatrixX<T> state_big = MatrixX<T>::Zero(D + 3, N + 2), out_big = MatrixX<T>::Zero(L + 2, D + 1);
  state_big.block(2, 1, D, N) = x0;
  SelectiveScanOptions<T> views;
  views.D = skip_row.row(1);
  views.z = z_rows;
  views.delta_bias = bias_strided;
  views.delta_softplus = true;
  selective_scan_into(u, delta, channel_major(At), kind(Bt.transpose()), kind(C_rows), views,
                      out_big.block(1, 1, L, D), state_big.block(2, 1, D, N));
  EXPECT_EQ(MatrixX<T>(out_big.block(1, 1, L, D)), expected.out) << "variant " << variant;
  EXPECT_EQ(MatrixX<T>(state_big.block(2, 1, D, N)), expected.last_state) << "variant " << variant;
  EXPECT_EQ(state_big.col(0).norm() + state_big.row(0).norm() + out_big.row(0).norm(), T(0)) << "wrote outside";
}

/// One step in the step's layout (A and the state with the channels contiguous for each state, the
/// one-step kernel where the CPU has AVX-512) against the same step with A channel-major (the lane
/// kernel): the same bits, with and without each option; grouped B and C whose groups fill whole lane
/// groups (D / G = 32) and ones that do not (D / G = 19, where the lane kernel runs those groups).
template <class T>
void check_step_layouts(Index D, Index N, Index G, bool options, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  const MatrixX<T> u = random_normal<T>(1, D, gen), delta = random_normal<T>(1, D, gen);
  const MatrixX<T> z = random_normal<T>(1, D, gen), A = random_stable_A<T>(D, N, gen);
  const MatrixX<T> skip = random_normal<T>(D, 1, gen), bias = random_normal<T>(D, 1, gen);
  const MatrixX<T> x0 = random_normal<T>(D, N, gen);
  const MatrixX<T> B = random_normal<T>(1, G * N, gen), C = random_normal<T>(1, G * N, gen);
  auto kind = [&](const MatrixX<T>& v) { return G == 1 ? ScanMatrix<T>::per_step(v) : ScanMatrix<T>::grouped(v, G); };
  SelectiveScanOptions<T> opt;
  if (options) {
    opt.D = skip;
    opt.z = z;
    opt.delta_bias = bias;
  }
  opt.delta_softplus = options;
  MatrixX<T> out_step(1, D), state_step = x0, out_lanes(1, D), state_lanes = x0;
  selective_scan_into(u, delta, A, kind(B), kind(C), opt, out_step, state_step);
  const MatrixX<T> At = A.transpose();
  selective_scan_into(u, delta, channel_major(At), kind(B), kind(C), opt, out_lanes, state_lanes);
  EXPECT_TRUE(out_step == out_lanes) << "D " << D << " N " << N << " G " << G << " options " << options;
  EXPECT_TRUE(state_step == state_lanes) << "D " << D << " N " << N << " G " << G << " options " << options;
}

TYPED_TEST(SelectiveScanTest, OneStepGivesTheBitsOfTheLaneKernel) {
  std::uint64_t seed = 1200;
  for (const bool options : {false, true}) {
    check_step_layouts<TypeParam>(38, 16, 1, options, seed++);
    check_step_layouts<TypeParam>(64, 70, 2, options, seed++);
    check_step_layouts<TypeParam>(38, 5, 2, options, seed++);
    check_step_layouts<TypeParam>(1536, 16, 1, options, seed++);
  }
}

TYPED_TEST(SelectiveScanTest, OperandsInPlaceOrRearrangedGiveTheSameBits) {
  for (int variant : {0, 1, 2}) check_layouts<TypeParam>(variant, 900 + std::uint64_t(variant));
}

TYPED_TEST(SelectiveScanTest, ComplexInPlaceFormMatchesTheReturningForm) {
  using T = TypeParam;
  using E = std::complex<T>;
  std::mt19937_64 gen(31);
  const Index L = 33, D = 5, N = 4;
  const MatrixX<T> u = random_normal<T>(L, D, gen), delta = random_normal<T>(L, D, gen);
  const MatrixX<E> A = random_stable_A<E>(D, N, gen), B = random_coef<E>(L, N, gen), C = random_coef<E>(L, N, gen);
  const MatrixX<E> x0 = random_coef<E>(D, N, gen);
  SelectiveScanOptions<T, E> opt;
  opt.delta_softplus = true;
  opt.initial_state = x0;
  const auto expected = selective_scan(u, delta, A, ScanMatrix<E>::per_step(B), ScanMatrix<E>::per_step(C), opt);
  MatrixX<E> state_big = MatrixX<E>::Zero(D + 1, N + 1);
  state_big.bottomRightCorner(D, N) = x0;
  MatrixX<T> out(L, D);
  opt.initial_state = {};
  selective_scan_into(u, delta, A, ScanMatrix<E>::per_step(B), ScanMatrix<E>::per_step(C), opt, out,
                      state_big.bottomRightCorner(D, N));
  EXPECT_EQ(out, expected.out);
  EXPECT_EQ(MatrixX<E>(state_big.bottomRightCorner(D, N)), expected.last_state);
}

TYPED_TEST(SelectiveScanTest, InPlaceFormAllocatesNothing) {
  // Operands in the kernel's layout (the Mamba block's): the scan reads them where they are, and
  // writes out and the state in place, with nothing allocated (one step and a short sequence).
  using T = TypeParam;
  std::mt19937_64 gen(8);
  const Index D = 40, N = 16;
  for (Index L : {1, 7}) {
    const MatrixX<T> u = random_normal<T>(L, D, gen), delta = random_normal<T>(L, D, gen), z = random_normal<T>(L, D, gen);
    const MatrixX<T> At = -random_normal<T>(N, D, gen).cwiseAbs();
    const MatrixX<T> x_dbl = random_normal<T>(3 + 2 * N, L, gen);  // per step: [dt input | B | C], Mamba's x_proj
    const VectorX<T> skip = random_normal<T>(D, 1, gen), bias = random_normal<T>(D, 1, gen);
    MatrixX<T> out(L, D), state = MatrixX<T>::Zero(D, N);
    SelectiveScanOptions<T> opt;
    opt.D = skip;
    opt.z = z;
    opt.delta_bias = bias;
    opt.delta_softplus = true;
    const auto B = ScanMatrix<T>::per_step(x_dbl.middleRows(3, N).transpose());
    const auto C = ScanMatrix<T>::per_step(x_dbl.middleRows(3 + N, N).transpose());
    std::string why;
    EXPECT_EQ(allocations_during([&] { selective_scan_into(u, delta, channel_major(At), B, C, opt, out, state); }, why), 0)
        << why << " L = " << L;
    SelectiveScanOptions<T> from_zero = opt;
    const auto expected = selective_scan(u, delta, MatrixX<T>(At.transpose()), B, C, from_zero);
    EXPECT_EQ(out, expected.out);
    EXPECT_EQ(state, expected.last_state);
  }
}

}  // namespace
}  // namespace ssm::test
