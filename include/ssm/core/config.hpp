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

/// Compiling the layers once: every layer's and model's heavy member functions (construction,
/// initialise, forward, step, the kernels) are marked SSM_NOINLINE. A translation unit that defines
/// SSM_EXTERN_TEMPLATES then sees, at the end of each layer header, `extern template class Layer<float>;`
/// and `<double>`, and the compiler neither instantiates nor optimises those members there: it calls the
/// copies compiled once by explicit instantiations elsewhere (tests/support/instances: one file per
/// layer, `template class ssm::S4<float>;` ...). Without the attribute GCC would still instantiate every
/// member for possible inlining, since in-class member functions are inline. The cost is one call per
/// forward or step, which does work of order L x H or more. Without SSM_EXTERN_TEMPLATES nothing changes.
#if defined(__GNUC__) || defined(__clang__)
#define SSM_NOINLINE [[gnu::noinline]]
#elif defined(_MSC_VER)
#define SSM_NOINLINE __declspec(noinline)
#else
#define SSM_NOINLINE
#endif

/// `extern template class Class<float>; extern template class Class<double>;` when SSM_EXTERN_TEMPLATES is
/// defined (see SSM_NOINLINE), nothing otherwise. Used at namespace scope after a layer's definition.
#if defined(SSM_EXTERN_TEMPLATES)
#define SSM_EXTERN_TEMPLATE_FLOAT_DOUBLE(Class) \
  extern template class Class<float>;           \
  extern template class Class<double>;
#else
#define SSM_EXTERN_TEMPLATE_FLOAT_DOUBLE(Class)
#endif
