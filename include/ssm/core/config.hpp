#pragma once
/// \file config.hpp
/// Build requirements every ssm header checks first (types.hpp and error.hpp include this file, and
/// every public header includes one of them).
///
/// Floating-point model: ssm needs IEEE semantics. Under -ffinite-math-only (implied by -ffast-math and
/// -Ofast) the compiler may assume no value is ever inf or NaN, so `std::isfinite(x)` folds to `true`
/// and the library's input checks (`check_finite`, dt > 0, ...) silently vanish: a NaN weight would flow
/// through every layer instead of raising ssm::error. -ffast-math also licenses reassociation, which
/// breaks the compensated products the kernels rely on (fma(a, b, -a*b) error terms, expm1 forms).
/// So these flags are refused at compile time rather than producing quietly wrong results.
/// Compile ssm translation units without them (they can still be used elsewhere in a program).

#if defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__
#error "ssm: compiled with -ffinite-math-only (or -ffast-math / -Ofast): std::isfinite would always be true and ssm's input checks would vanish. Build ssm code without it (e.g. add -fno-finite-math-only, or drop -ffast-math for these files)."
#endif

#if defined(__FAST_MATH__)
#error "ssm: compiled with -ffast-math (or -Ofast): it permits reassociation that breaks ssm's compensated arithmetic and, with -ffinite-math-only, removes its input checks. Build ssm code without -ffast-math."
#endif
