// HiPPO transitions, NPLR form and diagonal initialisations, against the reference's golden cases.
#include "test_support.hpp"

#include "ssm/hippo.hpp"

#include <Eigen/Eigenvalues>

#include <algorithm>
#include <string>
#include <vector>

namespace ssm::test {
namespace {

using hippo::DiagonalInit;
using hippo::Measure;

MatrixX<double> golden_matrix(const std::string& c, const std::string& a) { return golden(c, a).matrix<double>(); }
MatrixXc<double> golden_complex(const std::string& c, const std::string& a) {
  return golden(c, a).matrix<Complex<double>>();
}

void expect_transition_matches(const std::string& case_name, const hippo::Transition& t) {
  SCOPED_TRACE(case_name);
  SSM_EXPECT_NEAR_REL(t.A, golden_matrix(case_name, "A"), 1e-12);
  SSM_EXPECT_NEAR_REL(t.B, golden_matrix(case_name, "B"), 1e-12);
}

TEST(HippoTransition, MatchesGoldenCases) {
  expect_transition_matches("hippo_legs", hippo::legs(8));
  expect_transition_matches("hippo_legt", hippo::legt(8));
  expect_transition_matches("hippo_lagt", hippo::lagt(8, 1.0));
  expect_transition_matches("hippo_glagt", hippo::glagt(8, 0.0, 0.01));
  expect_transition_matches("hippo_fourier", hippo::fout(8));
  // The defaults are the golden parameters.
  expect_transition_matches("hippo_lagt", hippo::transition(Measure::lagt, 8));
  expect_transition_matches("hippo_glagt", hippo::transition(Measure::glagt, 8));
  expect_transition_matches("hippo_legt", hippo::transition(Measure::legt, 8));
}

TEST(HippoTransition, LegSClosedFormForOtherSizes) {
  for (Index N : {1, 5, 33}) {
    const auto t = hippo::legs(N);
    ASSERT_EQ(t.A.rows(), N);
    // LegS is lower triangular with eigenvalues -(n+1).
    for (Index n = 0; n < N; ++n) {
      EXPECT_DOUBLE_EQ(t.A(n, n), -double(n + 1));
      for (Index k = n + 1; k < N; ++k) EXPECT_EQ(t.A(n, k), 0.0);
    }
  }
}

TEST(HippoTransition, GeneralisedLaguerreWithAlphaMatchesLaguerreLimit) {
  // With alpha = 0 the glagt scaling l_n is 1: A = -(1+beta)/2 on the diagonal, -1 below.
  const auto t = hippo::glagt(6, 0.0, 0.5);
  EXPECT_NEAR(t.A(3, 3), -0.75, 1e-15);
  EXPECT_NEAR(t.A(4, 1), -1.0, 1e-15);
  EXPECT_NEAR(t.B(2), std::sqrt(0.5), 1e-15);
  // alpha != 0: the scaling is a similarity, so the eigenvalues (diagonal) are unchanged.
  const auto s = hippo::glagt(6, 0.5, 0.5);
  for (Index n = 0; n < 6; ++n) EXPECT_NEAR(s.A(n, n), -0.75, 1e-15);
  // B_n = binom(alpha+n, n) l_n^{-1} Gamma(1-alpha)^{-1/2} beta^{(1-alpha)/2}; n = 1: binom = 1.5,
  // l_1 = sqrt(Gamma(2.5)/Gamma(2)).
  const double expected = 1.5 / std::sqrt(std::tgamma(2.5)) / std::sqrt(std::tgamma(0.5)) * std::pow(0.5, 0.25);
  EXPECT_NEAR(s.B(1), expected, 1e-14);
}

TEST(HippoTransition, BadArgumentsThrow) {
  EXPECT_THROW(hippo::legs(0), ssm::error);
  EXPECT_THROW(hippo::fout(7), ssm::error);
  EXPECT_THROW(hippo::glagt(4, 1.0, 0.01), ssm::error);
  EXPECT_THROW(hippo::glagt(4, 0.0, 0.0), ssm::error);
  EXPECT_THROW(hippo::nplr(Measure::glagt, 4), ssm::error);
  EXPECT_THROW(hippo::nplr(Measure::legt, 4, 1), ssm::error);
  EXPECT_THROW(hippo::nplr(Measure::legs, 5), ssm::error);
  try {
    hippo::nplr(Measure::legs, 7);
    FAIL() << "expected ssm::error";
  } catch (const ssm::error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("hippo::nplr"), std::string::npos) << what;
    EXPECT_NE(what.find("N"), std::string::npos) << what;
    EXPECT_NE(what.find("7"), std::string::npos) << what;
  }
}

/// A rebuilt from the NPLR form: 2 Re(V diag(W) V^*) - (2 Re(V P^T)) (2 Re(V P^T))^T.
MatrixX<double> rebuild(const hippo::NPLR& f) {
  const MatrixX<double> normal = 2.0 * (f.V * f.W.asDiagonal() * f.V.adjoint()).real();
  const MatrixX<double> p = 2.0 * (f.V * f.P.transpose()).real();
  return normal - p * p.transpose();
}

TEST(HippoNPLR, LegSInvariantAndGoldenEigenvalues) {
  const Index N = 16;
  const auto f = hippo::nplr(Measure::legs, N);
  ASSERT_EQ(f.W.size(), N / 2);
  ASSERT_EQ(f.P.rows(), 1);
  ASSERT_EQ(f.P.cols(), N / 2);
  ASSERT_EQ(f.V.rows(), N);
  ASSERT_EQ(f.V.cols(), N / 2);
  // The invariant of the golden case, on the golden A.
  const MatrixX<double> A = golden_matrix("nplr_legs", "A");
  SSM_EXPECT_NEAR_REL(rebuild(f), A, 1e-10);
  SSM_EXPECT_NEAR_REL(hippo::legs(N).A, A, 1e-12);
  for (Index n = 0; n < N / 2; ++n) EXPECT_NEAR(f.W(n).real(), -0.5, 1e-12);
  // Eigenvalues are unique: compare with the reference's directly.
  SSM_EXPECT_NEAR_REL(f.W, golden_complex("nplr_legs", "W"), 1e-10);
  // The same invariant holds with the golden W, P, V (checks our reading of the form).
  hippo::NPLR g{golden_complex("nplr_legs", "W"), golden_complex("nplr_legs", "P"), VectorXc<double>(),
                golden_complex("nplr_legs", "V")};
  SSM_EXPECT_NEAR_REL(rebuild(g), A, 1e-10);
  // Each mode agrees with the reference up to a sign: the reference's V has a real first row (LAPACK),
  // ours a positive one, so s_n = sign(V_ref(0, n)) maps ours onto theirs (the B clip is odd, so it commutes).
  const MatrixXc<double> V_ref = golden_complex("nplr_legs", "V");
  const MatrixXc<double> B_ref = golden_complex("nplr_legs", "B");
  const MatrixXc<double> P_ref = golden_complex("nplr_legs", "P");
  for (Index n = 0; n < N / 2; ++n) {
    EXPECT_NEAR(V_ref(0, n).imag(), 0.0, 1e-12);
    EXPECT_NEAR(f.V(0, n).imag(), 0.0, 0.0);
    EXPECT_GT(f.V(0, n).real(), 0.0);
    const double s = V_ref(0, n).real() > 0 ? 1.0 : -1.0;
    EXPECT_LT(std::abs(s * f.B(n) - B_ref(n)), 1e-10) << "mode " << n;
    EXPECT_LT(std::abs(s * f.P(0, n) - P_ref(0, n)), 1e-10) << "mode " << n;
    EXPECT_LT((s * f.V.col(n) - V_ref.col(n)).norm(), 1e-10) << "mode " << n;
  }
}

TEST(HippoNPLR, EveryMeasureRebuildsItsMatrix) {
  for (Measure m : {Measure::legs, Measure::legt, Measure::lagt, Measure::fout}) {
    for (Index N : {2, 8, 24, 64}) {
      SCOPED_TRACE(std::string(hippo::measure_name(m)) + " N=" + std::to_string(N));
      const auto f = hippo::nplr(m, N, 0, std::nullopt);
      EXPECT_EQ(f.P.rows(), hippo::minimum_rank(m));
      const hippo::Transition t = hippo::transition(m, N);
      SSM_EXPECT_NEAR_REL(rebuild(f), t.A, 1e-10);
      // Unclipped B reconstructs B0 = 2 Re(V B).
      SSM_EXPECT_NEAR_REL((2.0 * (f.V * f.B).real()).eval(), t.B, 1e-10);
      // V and conj(V) together are unitary.
      MatrixXc<double> U(N, N);
      U << f.V, f.V.conjugate();
      SSM_EXPECT_NEAR_REL((U.adjoint() * U).eval(), MatrixXc<double>::Identity(N, N), 1e-12);
      // One of each pair, imag <= 0, sorted increasing.
      for (Index n = 0; n < N / 2; ++n) {
        EXPECT_LE(f.W(n).imag(), 1e-12);
        if (n > 0) {
          EXPECT_LE(f.W(n - 1).imag(), f.W(n).imag());
        }
      }
    }
  }
}

TEST(HippoNPLR, FourierZeroModeIsTheReferenceVector) {
  const auto f = hippo::nplr(Measure::fout, 8);
  const Index last = 3;
  EXPECT_LT(std::abs(f.W(last)), 1e-12);
  MatrixXc<double> expected = MatrixXc<double>::Zero(8, 1);
  expected(0, 0) = {std::sqrt(0.5), 0.0};
  expected(1, 0) = {0.0, std::sqrt(0.5)};
  SSM_EXPECT_NEAR_REL(f.V.col(last).eval(), expected, 1e-12);
}

TEST(HippoNPLR, ClippingBoundsImaginaryPartOfB) {
  const auto clipped = hippo::nplr(Measure::legs, 32, 0, 2.0);
  const auto raw = hippo::nplr(Measure::legs, 32, 0, std::nullopt);
  bool any_clipped = false;
  for (Index n = 0; n < 16; ++n) {
    EXPECT_LE(std::abs(clipped.B(n).imag()), 2.0);
    EXPECT_EQ(clipped.B(n).real(), raw.B(n).real());
    if (std::abs(raw.B(n).imag()) > 2.0) {
      any_clipped = true;
      EXPECT_EQ(std::abs(clipped.B(n).imag()), 2.0);
    } else {
      EXPECT_EQ(clipped.B(n).imag(), raw.B(n).imag());
    }
  }
  EXPECT_TRUE(any_clipped);
  // Padding the rank adds zero rows.
  const auto padded = hippo::nplr(Measure::legs, 8, 3);
  ASSERT_EQ(padded.P.rows(), 3);
  EXPECT_EQ(padded.P.bottomRows(2).norm(), 0.0);
}

/// The golden S4D A went through the reference kernel's bound imag(A) <= -1e-4.
VectorXc<double> reference_stored(const VectorXc<double>& A) {
  VectorXc<double> out = A;
  for (Index n = 0; n < A.size(); ++n) out(n) = {A(n).real(), std::min(A(n).imag(), -1e-4)};
  return out;
}

TEST(HippoDiagonal, MatchesGoldenS4DInitialisations) {
  const std::pair<DiagonalInit, std::string> inits[] = {
      {DiagonalInit::lin, "lin"}, {DiagonalInit::inv, "inv"}, {DiagonalInit::real, "real"}, {DiagonalInit::legs, "legs"}};
  for (const auto& [init, name] : inits) {
    for (const std::string disc : {"zoh", "bilinear"}) {
      const std::string c = "s4d_" + disc + "_diag-" + name;
      SCOPED_TRACE(c);
      const auto modes = hippo::diagonal_init(init, 8);
      const MatrixXc<double> A = golden_complex(c, "A"), B = golden_complex(c, "B");
      ASSERT_EQ(A.cols(), 4);
      for (Index h = 0; h < A.rows(); ++h) {
        // The reference made these in its default dtype, float32, and stored A through its exp/log
        // parametrisation: agreement is to float rounding (a few ulps of 1.2e-7).
        SSM_EXPECT_NEAR_REL(reference_stored(modes.A), A.row(h).transpose().eval(), 3e-7);
        for (Index n = 0; n < 4; ++n) {
          // B: exact for lin/inv/real (ones). For legs, up to the sign of each eigenvector (see NPLR), and
          // to float rounding: the reference's dplr() ran hippo.nplr in its default dtype, float32.
          if (init != DiagonalInit::legs) {
            EXPECT_EQ(modes.B(n), B(h, n)) << "mode " << n;
          } else {
            const double s = std::abs(modes.B(n) + B(h, n)) < std::abs(modes.B(n) - B(h, n)) ? -1.0 : 1.0;
            EXPECT_LT(std::abs(s * modes.B(n) - B(h, n)), 4e-7) << "mode " << n;
          }
        }
      }
    }
  }
}

TEST(HippoDiagonal, ClosedFormsForLargerN) {
  const double pi = 3.14159265358979323846;
  const Index N = 64;
  const auto lin = hippo::diagonal_init(DiagonalInit::lin, N);
  const auto inv = hippo::diagonal_init(DiagonalInit::inv, N);
  const auto real = hippo::diagonal_init(DiagonalInit::real, N);
  ASSERT_EQ(lin.A.size(), N / 2);
  for (Index n = 0; n < N / 2; ++n) {
    EXPECT_EQ(lin.A(n), Complex<double>(-0.5, -pi * n));
    EXPECT_NEAR(inv.A(n).imag(), -(N / pi) * (double(N) / (2 * n + 1) - 1), 1e-12);
    EXPECT_EQ(real.A(n), Complex<double>(-1.0 - n, 0.0));
    EXPECT_EQ(lin.B(n), Complex<double>(1.0, 0.0));
  }
  EXPECT_THROW(hippo::diagonal_init(DiagonalInit::lin, 7), ssm::error);
  EXPECT_THROW(hippo::diagonal_init(DiagonalInit::legs, 0), ssm::error);
}

/// S4D-LegS from first principles, by another algorithm than the library's: the normal part of LegS,
/// S = A + P0 P0^T with P0_n = sqrt(n + 1/2), has the closed form S_nn = -1/2 and
/// S_nk = -sign(n - k) sqrt((2n+1)(2k+1))/2 off the diagonal. Its eigenpairs come here from Eigen's general
/// ComplexEigenSolver (complex Schur) on the dense S; the library diagonalises -i times the skew part with
/// a self-adjoint solver. Mode n is the n-th eigenvalue with imag < 0 in increasing imag; its B is
/// v^* B0 (B0_n = sqrt(2n+1)), v the unit eigenvector with its first significant component real and
/// positive (the documented phase), imag clipped to [-2, 2].
TEST(HippoDiagonal, LegSMatchesAnIndependentEigensolver) {
  for (Index N : {2, 8, 16, 64}) {
    SCOPED_TRACE("N=" + std::to_string(N));
    MatrixXc<double> S(N, N);
    for (Index n = 0; n < N; ++n)
      for (Index k = 0; k < N; ++k)
        S(n, k) = n == k ? -0.5 : (n > k ? -0.5 : 0.5) * std::sqrt(double((2 * n + 1) * (2 * k + 1)));
    Eigen::ComplexEigenSolver<MatrixXc<double>> solver(S);
    ASSERT_EQ(solver.info(), Eigen::Success);
    std::vector<Index> modes;
    for (Index i = 0; i < N; ++i)
      if (solver.eigenvalues()(i).imag() < 0) modes.push_back(i);
    ASSERT_EQ(Index(modes.size()), N / 2);
    std::sort(modes.begin(), modes.end(),
              [&](Index i, Index j) { return solver.eigenvalues()(i).imag() < solver.eigenvalues()(j).imag(); });
    VectorX<double> B0(N);
    for (Index n = 0; n < N; ++n) B0(n) = std::sqrt(double(2 * n + 1));
    VectorXc<double> A_expected(N / 2), B_expected(N / 2);
    for (Index m = 0; m < N / 2; ++m) {
      A_expected(m) = solver.eigenvalues()(modes[std::size_t(m)]);
      VectorXc<double> v = solver.eigenvectors().col(modes[std::size_t(m)]);
      v /= v.norm();
      Index i = 0;
      while (i < N - 1 && std::abs(v(i)) <= 1e-6) ++i;
      v *= std::conj(v(i)) / std::abs(v(i));
      const Complex<double> b = v.dot(B0.cast<Complex<double>>());  // v^* B0
      B_expected(m) = {b.real(), std::clamp(b.imag(), -2.0, 2.0)};
    }
    const auto legs = hippo::diagonal_init(DiagonalInit::legs, N);
    // Eigenvalues of a normal matrix are perfectly conditioned: both solvers are backward stable, so they
    // agree to a small multiple of eps ||S|| (||S|| <= N^2/2; the largest |eigenvalue| is ~ ||S||).
    SSM_EXPECT_NEAR_REL(legs.A, A_expected, 1e-13 * double(N));
    // An eigenvector moves by eps ||S|| / gap; LegS's eigenvalue gaps are >= ~1 while ||S|| grows like
    // N^2, so B (|B| <= ||B0|| = N) agrees to ~ eps N^2 relative.
    SSM_EXPECT_NEAR_REL(legs.B, B_expected, 1e-14 * double(N * N));
  }
}

/// S4D-LegS at N = 16 against the reference's own NPLR of LegS (nplr_legs, computed in float64): the
/// eigenvalues directly, B up to the sign of each mode (the reference's eigenvector phase convention is
/// LAPACK's, see HippoNPLR).
TEST(HippoDiagonal, LegSMatchesTheGoldenNPLR) {
  const auto legs = hippo::diagonal_init(DiagonalInit::legs, 16);
  const VectorXc<double> W = golden_complex("nplr_legs", "W"), B = golden_complex("nplr_legs", "B");
  ASSERT_EQ(W.size(), 8);
  SSM_EXPECT_NEAR_REL(legs.A, W, 1e-12);
  for (Index n = 0; n < 8; ++n) {
    const double s = std::abs(legs.B(n) + B(n)) < std::abs(legs.B(n) - B(n)) ? -1.0 : 1.0;
    EXPECT_LT(std::abs(s * legs.B(n) - B(n)), 1e-12 * B.cwiseAbs().maxCoeff()) << "mode " << n;
  }
}

TEST(HippoDt, LogUniformInRangeSeededAndSpread) {
  std::mt19937_64 a(42), b(42);
  const VectorX<double> x = hippo::log_uniform_dt(2000, 1e-3, 1e-1, a);
  const VectorX<double> y = hippo::log_uniform_dt(2000, 1e-3, 1e-1, b);
  EXPECT_EQ(x, y);
  EXPECT_GE(x.minCoeff(), 1e-3);
  EXPECT_LE(x.maxCoeff(), 1e-1);
  // log dt is uniform on [log 1e-3, log 1e-1]: mean log10 = -2, a quarter below -2.5.
  const double mean_log10 = x.array().log10().mean();
  EXPECT_NEAR(mean_log10, -2.0, 0.05);
  const double below = double((x.array() < std::pow(10.0, -2.5)).count()) / x.size();
  EXPECT_NEAR(below, 0.25, 0.04);
  const VectorX<double> same = hippo::log_uniform_dt(3, 0.01, 0.01, a);
  for (Index h = 0; h < 3; ++h) EXPECT_EQ(same(h), 0.01);
  EXPECT_THROW(hippo::log_uniform_dt(3, 0.0, 0.1, a), ssm::error);
  EXPECT_THROW(hippo::log_uniform_dt(3, 0.1, 0.01, a), ssm::error);
  EXPECT_THROW(hippo::log_uniform_dt(-1, 0.01, 0.1, a), ssm::error);
}

}  // namespace
}  // namespace ssm::test
