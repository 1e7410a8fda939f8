#pragma once
/// \file scan_dispatch.hpp
/// Runs a real selective scan: lane groups of channels spread across threads (OpenMP, when
/// `_OPENMP` is defined), each with the widest build of the lane kernel (scan_lanes.hpp) the CPU has.
///
/// With GCC or Clang on x86-64 the kernel is compiled three times, for the baseline (SSE2), for AVX2 +
/// FMA and for AVX-512, and the CPU is asked once at run time which it can run: the library stays
/// header-only and portable, and a build without -march flags still runs at the machine's speed.
/// Elsewhere (or with SSM_NO_RUNTIME_DISPATCH) only the baseline build exists.

#include "ssm/core/types.hpp"
#include "ssm/detail/scan_lanes.hpp"
#ifdef SSM_SCAN_DISPATCH
#include "ssm/detail/scan_step_avx512.hpp"
#endif

#include <algorithm>
#include <type_traits>

namespace ssm::detail {

template <class Scalar>
void scan_lanes_baseline(const RealScanProblem<Scalar>& p, Index d0) {
  scan_lanes<Scalar, 16>(p, d0);  // SSE2 registers
}

#ifdef SSM_SCAN_DISPATCH
#if defined(SSM_SCAN_VECTOR_EXT) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // vector arguments of always-inline helpers: no ABI involved
#endif
template <class Scalar>
__attribute__((target("avx2,fma"))) void scan_lanes_avx2(const RealScanProblem<Scalar>& p, Index d0) {
  scan_lanes<Scalar, 32>(p, d0);
}

template <class Scalar>
__attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"))) void scan_lanes_avx512(const RealScanProblem<Scalar>& p,
                                                                                    Index d0) {
  scan_lanes<Scalar, 0>(p, d0);  // plain loops (GCC vectorises them fully) or, fp32 with shared B / C, the intrinsics
}
#if defined(SSM_SCAN_VECTOR_EXT) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/// Caps the instruction set `run_real_scan` uses (0 baseline, 1 AVX2, 2 AVX-512); -1, the default,
/// means no cap. For tests, which run every kernel on one machine.
inline int scan_isa_cap = -1;

/// 0: baseline, 1: AVX2 + FMA, 2: AVX-512 (the best the CPU has, determined once, and at most
/// `scan_isa_cap`).
inline int scan_isa() {
  static const int best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
      return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
    return 0;
  }();
  return scan_isa_cap >= 0 ? std::min(best, scan_isa_cap) : best;
}
#endif

/// Work (channels x states x steps) below which threads cost more than they save.
inline constexpr Index kScanParallelWork = Index(1) << 16;

/// Runs a real scan: lane groups of channels spread across threads (OpenMP), each with the widest
/// kernel the CPU supports (for one fp32 step in the step's layout, scan_step_avx512.hpp). Allocates
/// nothing.
template <class Scalar>
void run_real_scan(const RealScanProblem<Scalar>& p) {
  constexpr int W = kLanes<Scalar>;
  const Index groups = (p.D + W - 1) / W;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (p.D * p.N * p.L >= kScanParallelWork)
#endif
  for (Index g = 0; g < groups; ++g) {
#ifdef SSM_SCAN_DISPATCH
    if constexpr (std::is_same_v<Scalar, float>) {
      // One step with the channels contiguous: the step kernel, where the group's lanes share B and C.
      const Index d0 = g * W, last = std::min(p.D, d0 + W) - 1;
      if (scan_isa() == 2 && scan_step_fits(p) && p.B.offset(d0, p.N) == p.B.offset(last, p.N) &&
          p.C.offset(d0, p.N) == p.C.offset(last, p.N)) {
        scan_step_avx512(p, d0);
        continue;
      }
    }
    switch (scan_isa()) {
      case 2: scan_lanes_avx512(p, g * W); continue;
      case 1: scan_lanes_avx2(p, g * W); continue;
      default: break;
    }
#endif
    scan_lanes_baseline(p, g * W);
  }
}

}  // namespace ssm::detail
