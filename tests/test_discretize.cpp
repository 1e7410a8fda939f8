// Discretisation of diagonal, dense and DPLR systems, each against an independent computation.
#include "test_support.hpp"

#include "ssm/discretize.hpp"
#include "ssm/discretize_dense.hpp"

#include <Eigen/LU>

#include <string>

namespace ssm::test {
namespace {

using cld = std::complex<long double>;

template <class T>
class DiscretizeTest : public ::testing::Test {};
TYPED_TEST_SUITE(DiscretizeTest, Scalars);

/// (e^z - 1)/z in long double: the Taylor series for small |z|, the direct formula otherwise.
cld expm1_over_ld(cld z) {
  if (std::abs(z) < 0.5L) {
    cld term = 1, sum = 0;
    for (int k = 1; k < 40; ++k) {
      sum += term;
      term *= z / (long double)(k + 1);
    }
    return sum;
  }
  return (std::exp(z) - 1.0L) / z;
}

/// Random stable diagonal systems spanning many scales of dt A, including tiny ones.
template <class T>
void random_diagonal_system(Index H, Index M, std::mt19937_64& gen, MatrixXc<T>& A, MatrixXc<T>& B, VectorX<T>& dt) {
  std::uniform_real_distribution<double> u(0, 1);
  A.resize(H, M);
  for (Index h = 0; h < H; ++h)
    for (Index m = 0; m < M; ++m) {
      const double re = -std::pow(10.0, -8 + 10 * u(gen));
      const double im = (u(gen) - 0.5) * std::pow(10.0, -8 + 10 * u(gen));
      A(h, m) = std::complex<T>(T(re), T(im));
    }
  B = random_complex<T>(H, M, gen);
  dt.resize(H);
  for (Index h = 0; h < H; ++h) dt(h) = T(std::pow(10.0, -4 + 4 * u(gen)));
}

TYPED_TEST(DiscretizeTest, DiagonalZOHMatchesLongDoubleFormula) {
  using T = TypeParam;
  std::mt19937_64 gen(11);
  MatrixXc<T> A, B;
  VectorX<T> dt;
  random_diagonal_system<T>(16, 24, gen, A, B, dt);
  const auto d = discretize_diagonal(A, B, dt, Discretization::zoh);
  ASSERT_EQ(d.A_bar.rows(), 16);
  ASSERT_EQ(d.B_bar.cols(), 24);
  // Computed in double, rounded once: each entry is within a few ulps of T relative to itself.
  const double tol = 4 * double(scalar_traits<T>::epsilon) + 1e-14;
  for (Index h = 0; h < 16; ++h)
    for (Index m = 0; m < 24; ++m) {
      const cld a(A(h, m).real(), A(h, m).imag()), b(B(h, m).real(), B(h, m).imag());
      const long double step = dt(h);
      const cld z = step * a;
      const cld a_bar = std::exp(z), b_bar = step * b * expm1_over_ld(z);
      EXPECT_LE(std::abs(cld(d.A_bar(h, m).real(), d.A_bar(h, m).imag()) - a_bar), tol * std::abs(a_bar)) << h << "," << m;
      EXPECT_LE(std::abs(cld(d.B_bar(h, m).real(), d.B_bar(h, m).imag()) - b_bar), tol * std::abs(b_bar)) << h << "," << m;
    }
}

TYPED_TEST(DiscretizeTest, DiagonalBilinearMatchesLongDoubleFormula) {
  using T = TypeParam;
  std::mt19937_64 gen(12);
  MatrixXc<T> A, B;
  VectorX<T> dt;
  random_diagonal_system<T>(16, 24, gen, A, B, dt);
  const auto d = discretize_diagonal(A, B, dt, Discretization::bilinear);
  const double tol = 4 * double(scalar_traits<T>::epsilon) + 1e-14;
  for (Index h = 0; h < 16; ++h)
    for (Index m = 0; m < 24; ++m) {
      const cld a(A(h, m).real(), A(h, m).imag()), b(B(h, m).real(), B(h, m).imag());
      const long double step = dt(h);
      const cld a_bar = (1.0L + step / 2 * a) / (1.0L - step / 2 * a), b_bar = step * b / (1.0L - step / 2 * a);
      EXPECT_LE(std::abs(cld(d.A_bar(h, m).real(), d.A_bar(h, m).imag()) - a_bar), tol * std::abs(a_bar));
      EXPECT_LE(std::abs(cld(d.B_bar(h, m).real(), d.B_bar(h, m).imag()) - b_bar), tol * std::abs(b_bar));
    }
}

TEST(DiscretizeDiagonal, ZOHIsAccurateForTinyAndZeroA) {
  // dt A = 1e-12 (1 + i): the naive (exp(dt A) - 1)/A loses every digit; expm1 keeps them.
  MatrixXc<double> A(1, 3), B(1, 3);
  A << Complex<double>(-1e-12, 1e-12), Complex<double>(0, 0), Complex<double>(0, 1e-9);
  B << 1.0, Complex<double>(2, 1), 1.0;
  VectorX<double> dt(1);
  dt << 1.0;
  const auto d = discretize_diagonal(A, B, dt, Discretization::zoh);
  const Complex<double> z = A(0, 0);
  const Complex<double> expected = 1.0 + z / 2.0 + z * z / 6.0;
  EXPECT_LT(std::abs(d.B_bar(0, 0) - expected), 1e-16);
  EXPECT_EQ(d.B_bar(0, 1), Complex<double>(2, 1));  // A = 0: Bbar = dt B exactly
  EXPECT_EQ(d.A_bar(0, 1), Complex<double>(1, 0));
  EXPECT_LT(std::abs(d.B_bar(0, 2) - (1.0 + A(0, 2) / 2.0)), 1e-17);
}

TYPED_TEST(DiscretizeTest, DiagonalBadInputsThrow) {
  using T = TypeParam;
  const MatrixXc<T> A = MatrixXc<T>::Constant(2, 3, std::complex<T>(-1, 0));
  const MatrixXc<T> B = MatrixXc<T>::Ones(2, 3);
  VectorX<T> dt = VectorX<T>::Constant(2, T(0.1));
  EXPECT_NO_THROW(discretize_diagonal(A, B, dt, Discretization::zoh));
  EXPECT_THROW(discretize_diagonal<T>(A, MatrixXc<T>::Ones(2, 4), dt, Discretization::zoh), ssm::error);
  EXPECT_THROW(discretize_diagonal<T>(A, B, VectorX<T>::Constant(3, T(0.1)), Discretization::zoh), ssm::error);
  VectorX<T> bad = dt;
  bad(1) = 0;
  try {
    discretize_diagonal(A, B, bad, Discretization::bilinear);
    FAIL() << "expected ssm::error";
  } catch (const ssm::error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("discretize_diagonal"), std::string::npos) << what;
    EXPECT_NE(what.find("dt"), std::string::npos) << what;
    EXPECT_NE(what.find("> 0"), std::string::npos) << what;
  }
  MatrixXc<T> singular = A;
  singular(0, 0) = std::complex<T>(16, 0);  // dt A = 2 exactly with dt = 1/8
  const VectorX<T> eighth = VectorX<T>::Constant(2, T(0.125));
  EXPECT_THROW(discretize_diagonal(singular, B, eighth, Discretization::bilinear), ssm::error);
  EXPECT_NO_THROW(discretize_diagonal(singular, B, eighth, Discretization::zoh));
  MatrixXc<T> nan = A;
  nan(1, 2) = std::complex<T>(std::numeric_limits<T>::quiet_NaN(), 0);
  EXPECT_THROW(discretize_diagonal(nan, B, dt, Discretization::zoh), ssm::error);
}

using MatrixLD = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;

TYPED_TEST(DiscretizeTest, DenseZOHMatchesTaylorSeriesInLongDouble) {
  using T = TypeParam;
  std::mt19937_64 gen(21);
  for (Index N : {1, 3, 6}) {
    const MatrixX<T> A = random_normal<T>(N, N, gen);
    const MatrixX<T> B = random_normal<T>(N, 2, gen);
    const double dt = 0.3;
    const auto d = discretize_dense<T>(A, B, dt, Discretization::zoh);
    // exp(dt A) = sum (dt A)^k / k!, Bbar = sum dt^(k+1) A^k B / (k+1)!: converges fast for |dt A| ~ 1.
    const MatrixLD a = A.template cast<long double>(), b = B.template cast<long double>();
    MatrixLD term = MatrixLD::Identity(N, N), expA = MatrixLD::Zero(N, N), phi = MatrixLD::Zero(N, N);
    for (int k = 0; k < 40; ++k) {
      expA += term;
      phi += term * ((long double)dt / (k + 1));  // dt^(k+1) A^k / (k+1)!
      term = term * a * ((long double)dt / (k + 1));
    }
    const MatrixLD bbar = phi * b;
    const double tol = 20 * double(scalar_traits<T>::epsilon) + 1e-14;
    SSM_EXPECT_NEAR_REL(d.A_bar.template cast<double>(), expA.template cast<double>(), tol);
    SSM_EXPECT_NEAR_REL(d.B_bar.template cast<double>(), bbar.template cast<double>(), tol);
  }
  // Singular A: ZOH of A = 0 is the integrator, Bbar = dt B.
  const auto z = discretize_dense<T>(MatrixX<T>::Zero(2, 2), MatrixX<T>::Ones(2, 1), 0.5, Discretization::zoh);
  SSM_EXPECT_NEAR_REL(z.B_bar.template cast<double>(), MatrixX<double>::Constant(2, 1, 0.5), 1e-15);
  SSM_EXPECT_NEAR_REL(z.A_bar.template cast<double>(), MatrixX<double>::Identity(2, 2), 1e-15);
}

TYPED_TEST(DiscretizeTest, DenseBilinearMatchesLongDoubleSolve) {
  using T = TypeParam;
  std::mt19937_64 gen(22);
  const Index N = 5;
  const MatrixXc<T> A = random_complex<T>(N, N, gen);
  const MatrixXc<T> B = random_complex<T>(N, 1, gen);
  const double dt = 0.2;
  const auto d = discretize_dense<Complex<T>>(A, B, dt, Discretization::bilinear);
  using CLD = Eigen::Matrix<std::complex<long double>, Eigen::Dynamic, Eigen::Dynamic>;
  const CLD a = A.template cast<std::complex<long double>>(), b = B.template cast<std::complex<long double>>();
  const CLD I = CLD::Identity(N, N);
  const Eigen::FullPivLU<CLD> lu(I - (long double)(dt / 2) * a);
  const MatrixXc<double> a_bar = lu.solve(I + (long double)(dt / 2) * a).template cast<Complex<double>>();
  const MatrixXc<double> b_bar = lu.solve((long double)dt * b).template cast<Complex<double>>();
  const double tol = 50 * double(scalar_traits<T>::epsilon) + 1e-14;
  SSM_EXPECT_NEAR_REL(d.A_bar.template cast<Complex<double>>(), a_bar, tol);
  SSM_EXPECT_NEAR_REL(d.B_bar.template cast<Complex<double>>(), b_bar, tol);
  // Dense ZOH of a diagonal system equals the elementwise formula.
  MatrixXc<T> diag = MatrixXc<T>::Zero(N, N);
  for (Index n = 0; n < N; ++n) diag(n, n) = std::complex<T>(T(-0.5 - n), T(n));
  const auto dz = discretize_dense<Complex<T>>(diag, B, dt, Discretization::zoh);
  const VectorX<T> dts = VectorX<T>::Constant(N, T(dt));
  const auto e = discretize_diagonal<T>(diag.diagonal(), B, dts, Discretization::zoh);
  SSM_EXPECT_NEAR_REL(dz.A_bar.diagonal().template cast<Complex<double>>().eval(), e.A_bar.template cast<Complex<double>>(), tol);
  SSM_EXPECT_NEAR_REL(dz.B_bar.template cast<Complex<double>>(), e.B_bar.template cast<Complex<double>>(), tol);
  const auto db = discretize_dense<Complex<T>>(diag, B, dt, Discretization::bilinear);
  const auto eb = discretize_diagonal<T>(diag.diagonal(), B, dts, Discretization::bilinear);
  SSM_EXPECT_NEAR_REL(db.A_bar.diagonal().template cast<Complex<double>>().eval(), eb.A_bar.template cast<Complex<double>>(), tol);
  SSM_EXPECT_NEAR_REL(db.B_bar.template cast<Complex<double>>(), eb.B_bar.template cast<Complex<double>>(), tol);
  EXPECT_THROW(discretize_dense<T>(MatrixX<T>::Ones(2, 3), MatrixX<T>::Ones(2, 1), dt, Discretization::zoh), ssm::error);
  EXPECT_THROW(discretize_dense<T>(MatrixX<T>::Ones(2, 2), MatrixX<T>::Ones(3, 1), dt, Discretization::zoh), ssm::error);
  EXPECT_THROW(discretize_dense<T>(MatrixX<T>::Ones(2, 2), MatrixX<T>::Ones(2, 1), -1.0, Discretization::zoh), ssm::error);
  // I - dt/2 A singular: A = (2/dt) I.
  EXPECT_THROW(discretize_dense<T>(MatrixX<T>::Identity(2, 2) * T(10), MatrixX<T>::Ones(2, 1), 0.2, Discretization::bilinear),
               ssm::error);
}

TYPED_TEST(DiscretizeTest, DPLRStepMatchesDenseBilinearOfFullSystem) {
  using T = TypeParam;
  std::mt19937_64 gen(23);
  for (Index rank : {1, 2, 3}) {
    const Index H = 3, M = 5, N = 2 * M;
    MatrixXc<T> Lambda = random_complex<T>(H, M, gen);
    for (Index h = 0; h < H; ++h)
      for (Index n = 0; n < M; ++n) Lambda(h, n) = std::complex<T>(-std::abs(Lambda(h, n).real()) - T(0.1), Lambda(h, n).imag());
    LowRank<T> P;
    for (Index q = 0; q < rank; ++q) P.push_back(random_complex<T>(H, M, gen));
    const MatrixXc<T> B = random_complex<T>(H, M, gen);
    VectorX<T> dt(H);
    dt << T(0.01), T(0.1), T(1.0);
    const auto d = discretize_dplr(Lambda, P, B, dt);
    EXPECT_EQ(d.rank(), rank);
    std::vector<T> scratch(std::size_t(2 * rank));
    for (Index h = 0; h < H; ++h) {
      // The full complex system on [x; conj x].
      MatrixXc<double> A = MatrixXc<double>::Zero(N, N), Pf(N, rank), Bf(N, 1);
      for (Index n = 0; n < M; ++n) {
        A(n, n) = std::complex<double>(Lambda(h, n));
        A(M + n, M + n) = std::conj(std::complex<double>(Lambda(h, n)));
        Bf(n, 0) = std::complex<double>(B(h, n));
        Bf(M + n, 0) = std::conj(Bf(n, 0));
        for (Index q = 0; q < rank; ++q) {
          Pf(n, q) = std::complex<double>(P[std::size_t(q)](h, n));
          Pf(M + n, q) = std::conj(Pf(n, q));
        }
      }
      A -= Pf * Pf.adjoint();
      const auto dense = discretize_dense<Complex<double>>(A, Bf, double(dt(h)), Discretization::bilinear);
      const MatrixXc<T> x0 = random_complex<T>(M, 1, gen);
      const T u = T(0.7);
      VectorXc<double> xf(N);
      xf << x0.col(0).template cast<Complex<double>>(), x0.col(0).template cast<Complex<double>>().conjugate();
      const VectorXc<double> expected = dense.A_bar * xf + dense.B_bar.col(0) * double(u);
      VectorXc<T> x = x0.col(0);
      d.step(h, x.data(), u, scratch.data());
      const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-5;
      SSM_EXPECT_NEAR_REL(x.template cast<Complex<double>>(), expected.head(M).eval(), tol);
      // The conjugate half is the conjugate: the real-linear reading is consistent.
      SSM_EXPECT_NEAR_REL(x.template cast<Complex<double>>().conjugate().eval(), expected.tail(M).eval(), tol);
      // The real 2M x 2M transition matrix is the same map.
      const MatrixX<double> real = dplr_transition_real(d, h);
      VectorX<double> xr(N);
      xr << x0.col(0).real().template cast<double>(), x0.col(0).imag().template cast<double>();
      const VectorXc<double> ax = (dense.A_bar * xf).head(M);
      VectorX<double> ax_r(N);
      ax_r << ax.real(), ax.imag();
      SSM_EXPECT_NEAR_REL((real * xr).eval(), ax_r, tol);
    }
  }
}

/// A random stable DPLR channel (H = 1) of M modes and the given rank, at scale-one parameters.
template <class T>
void random_dplr_channel(Index M, Index rank, std::mt19937_64& gen, MatrixXc<T>& Lambda, LowRank<T>& P, MatrixXc<T>& B) {
  std::uniform_real_distribution<double> u(0, 1);
  Lambda.resize(1, M);
  for (Index n = 0; n < M; ++n) Lambda(0, n) = std::complex<T>(T(-0.05 - 0.95 * u(gen)), T(20 * (u(gen) - 0.5)));
  P.clear();
  for (Index q = 0; q < rank; ++q) P.push_back((random_complex<T>(1, M, gen) * T(0.3)).eval());
  B = random_complex<T>(1, M, gen);
}

using MatrixXcld = Eigen::Matrix<cld, Eigen::Dynamic, Eigen::Dynamic>;
using VectorXcld = Eigen::Matrix<cld, Eigen::Dynamic, 1>;

/// The full complex system of one DPLR channel on [x; conj x] in long double, from T parameters:
/// A = diag(Lambda, conj Lambda) - Pf Pf^*, Bf = [B; conj B].
template <class T>
void full_dplr_system(const MatrixXc<T>& Lambda, const LowRank<T>& P, const MatrixXc<T>& B, MatrixXcld& A,
                      VectorXcld& Bf) {
  const Index M = Lambda.cols(), N = 2 * M, r = Index(P.size());
  A = MatrixXcld::Zero(N, N);
  MatrixXcld Pf(N, r);
  Bf.resize(N);
  for (Index n = 0; n < M; ++n) {
    A(n, n) = cld(Lambda(0, n));
    A(M + n, M + n) = std::conj(cld(Lambda(0, n)));
    Bf(n) = cld(B(0, n));
    Bf(M + n) = std::conj(Bf(n));
    for (Index q = 0; q < r; ++q) {
      Pf(n, q) = cld(P[std::size_t(q)](0, n));
      Pf(M + n, q) = std::conj(Pf(n, q));
    }
  }
  A -= Pf * Pf.adjoint();
}

// The bilinear step at small dt is computed in increment form: dx = (2/dt - A)^{-1} (2 A x + 2 B u) to a
// few ulps relative to dx itself, in float too. Rounding (2/dt + Lambda) and (2/dt - Lambda)^{-1} separately
// (the old form) left dx wrong by ~eps |x| / (dt |A|): tens of percent at dt = 1e-6 in float.
TYPED_TEST(DiscretizeTest, DPLRIncrementIsAccurateDownToTinySteps) {
  using T = TypeParam;
  const double eps = double(scalar_traits<T>::epsilon);
  std::mt19937_64 gen(101);
  for (Index rank : {1, 2}) {
    for (double step : {1e-2, 1e-4, 1e-5, 1e-6, 3e-7, 1e-7}) {
      const Index M = 6, N = 2 * M;
      MatrixXc<T> Lambda, B;
      LowRank<T> P;
      random_dplr_channel<T>(M, rank, gen, Lambda, P, B);
      const VectorX<T> dt = VectorX<T>::Constant(1, T(step));
      const auto d = discretize_dplr(Lambda, P, B, dt);
      MatrixXcld A;
      VectorXcld Bf;
      full_dplr_system(Lambda, P, B, A, Bf);
      const long double two_over_dt = 2.0L / (long double)dt(0);
      const Eigen::PartialPivLU<MatrixXcld> lu(MatrixXcld(two_over_dt * MatrixXcld::Identity(N, N) - A));
      std::vector<T> scratch(std::size_t(2 * rank));
      for (const T u : {T(0), T(0.7)}) {
        const VectorXc<T> x = random_complex<T>(M, 1, gen).col(0);
        VectorXcld xf(N);
        for (Index n = 0; n < M; ++n) {
          xf(n) = cld(x(n));
          xf(M + n) = std::conj(xf(n));
        }
        const VectorXcld expected = lu.solve(VectorXcld(2.0L * (A * xf) + 2.0L * (long double)u * Bf));
        VectorXc<T> dx(M);
        d.increment(0, x.data(), u, dx.data(), scratch.data());
        long double err = 0, ref = 0;
        for (Index n = 0; n < M; ++n) {
          err = std::max(err, std::abs(cld(dx(n)) - expected(n)));
          ref = std::max(ref, std::abs(expected(n)));
        }
        // dx is ~ dt |A x|; its error must be a few ulps of dx, not ulps of x.
        EXPECT_LE(double(err / ref), 32 * eps) << "rank " << rank << ", dt " << step << ", u " << u;
        // And the step is x + dx, rounded once.
        VectorXc<T> stepped = x;
        d.step(0, stepped.data(), u, scratch.data());
        for (Index n = 0; n < M; ++n) {
          const cld exact = xf(n) + expected(n);
          EXPECT_LE(double(std::abs(cld(stepped(n)) - exact)), 2 * eps * double(std::abs(exact)) + 32 * eps * double(ref))
              << "rank " << rank << ", dt " << step << ", mode " << n;
        }
      }
    }
  }
}

// A stable DPLR system (Re Lambda < 0, A = Lambda - P P^* dissipative) never gains norm without input, and
// its decay over many steps follows the exact recurrence, in float down to dt = 1e-7. With the old
// factored form |Abar| exceeded 1 below dt ~ 2e-7 in float and the norm grew steadily.
TYPED_TEST(DiscretizeTest, DPLRZeroInputNormNeverGrowsAtTinySteps) {
  using T = TypeParam;
  const double eps = double(scalar_traits<T>::epsilon);
  std::mt19937_64 gen(202);
  const Index M = 5, N = 2 * M, steps = 20000;
  for (double step : {1e-5, 1e-6, 2e-7, 1e-7}) {
    MatrixXc<T> Lambda, B;
    LowRank<T> P;
    random_dplr_channel<T>(M, 1, gen, Lambda, P, B);
    const auto d = discretize_dplr(Lambda, P, B, VectorX<T>::Constant(1, T(step)).eval());
    MatrixXcld A;
    VectorXcld Bf;
    full_dplr_system(Lambda, P, B, A, Bf);
    const long double two_over_dt = 2.0L / (long double)T(step);
    // Reference in long double, also in increment form: x += (2/dt - A)^{-1} 2 A x.
    const MatrixXcld G = Eigen::PartialPivLU<MatrixXcld>(MatrixXcld(two_over_dt * MatrixXcld::Identity(N, N) - A))
                             .solve(MatrixXcld(2.0L * A));
    VectorXc<T> x = random_complex<T>(M, 1, gen).col(0);
    VectorXcld xr(N);
    for (Index n = 0; n < M; ++n) {
      xr(n) = cld(x(n));
      xr(M + n) = std::conj(xr(n));
    }
    VectorXc<T> xc = x, xc_lo = VectorXc<T>::Zero(M);  // the compensated state xc + xc_lo
    std::vector<T> scratch(2);
    auto norm = [](const VectorXc<T>& v) { return double(v.template cast<Complex<double>>().norm()); };
    const double norm0 = norm(x);
    double max_norm = norm0, max_norm_c = norm0;
    for (Index k = 0; k < steps; ++k) {
      d.step(0, x.data(), T(0), scratch.data());
      d.step_compensated(0, xc.data(), xc_lo.data(), T(0), scratch.data());
      xr += G * xr;
      max_norm = std::max(max_norm, norm(x));
      max_norm_c = std::max(max_norm_c, double((xc.template cast<Complex<double>>() + xc_lo.template cast<Complex<double>>()).norm()));
    }
    EXPECT_LE(max_norm, norm0 * (1 + 16 * eps)) << "dt " << step;
    EXPECT_LE(max_norm_c, norm0 * (1 + 16 * eps)) << "dt " << step;
    long double ref_norm = 0;
    for (Index n = 0; n < M; ++n) ref_norm += std::norm(xr(n));
    ref_norm = std::sqrt(ref_norm);
    const double decay = 1 - double(ref_norm) / norm0;  // the total decay over the run
    const double got = 1 - norm(x) / norm0;
    const double got_c = 1 - double((xc.template cast<Complex<double>>() + xc_lo.template cast<Complex<double>>()).norm()) / norm0;
    // The compensated state follows the exact recurrence over the whole run.
    EXPECT_NEAR(got_c, decay, 0.01 * decay + 1e-12) << "dt " << step;
    // The plain T state does too while the per-step change is resolvable at the scale of x; below that
    // (dt |Re Lambda| < eps / 2) changes under half an ulp are lost: see DPLRDiscrete.
    if (step * 0.05 > 4 * eps) {
      EXPECT_NEAR(got, decay, 0.02 * decay) << "dt " << step;
    }
  }
}

TYPED_TEST(DiscretizeTest, DPLRBadInputsThrow) {
  using T = TypeParam;
  const MatrixXc<T> Lambda = MatrixXc<T>::Constant(2, 3, std::complex<T>(-1, 2));
  const LowRank<T> P{MatrixXc<T>::Ones(2, 3)};
  const MatrixXc<T> B = MatrixXc<T>::Ones(2, 3);
  const VectorX<T> dt = VectorX<T>::Constant(2, T(0.1));
  EXPECT_NO_THROW(discretize_dplr(Lambda, P, B, dt));
  EXPECT_THROW(discretize_dplr(Lambda, LowRank<T>{}, B, dt), ssm::error);
  EXPECT_THROW(discretize_dplr(Lambda, LowRank<T>{MatrixXc<T>::Ones(3, 3)}, B, dt), ssm::error);
  EXPECT_THROW(discretize_dplr<T>(Lambda, P, MatrixXc<T>::Ones(2, 2), dt), ssm::error);
  EXPECT_THROW(discretize_dplr<T>(Lambda, P, B, VectorX<T>::Constant(2, T(-0.1))), ssm::error);
  MatrixXc<T> unstable = Lambda;
  unstable(1, 1) = std::complex<T>(0, 1);
  try {
    discretize_dplr(unstable, P, B, dt);
    FAIL() << "expected ssm::error";
  } catch (const ssm::error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("discretize_dplr: Lambda"), std::string::npos) << what;
    EXPECT_NE(what.find("(1, 1)"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace ssm::test
