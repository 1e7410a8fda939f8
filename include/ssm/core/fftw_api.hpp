#pragma once
/// \file fftw_api.hpp
/// FFTW 3's real-to-complex functions in both precisions behind one name, `ssm::fft::fftw::api<T>`
/// (fftw_* for double, fftwf_* for float): what the FFTW backend (fft_fftw.hpp) plans and runs with,
/// and what the benchmarks call for raw-FFTW reference figures.

#include <fftw3.h>

namespace ssm::fft::fftw {

/// The FFTW functions for one precision, behind one name.
template <class T>
struct api;

template <>
struct api<double> {
  using plan_type = fftw_plan;
  using complex_type = fftw_complex;
  static plan_type plan_r2c(int n, double* in, complex_type* out, unsigned flags) {
    return fftw_plan_dft_r2c_1d(n, in, out, flags);
  }
  static plan_type plan_c2r(int n, complex_type* in, double* out, unsigned flags) {
    return fftw_plan_dft_c2r_1d(n, in, out, flags);
  }
  static void r2c(plan_type p, double* in, complex_type* out) { fftw_execute_dft_r2c(p, in, out); }
  static void c2r(plan_type p, complex_type* in, double* out) { fftw_execute_dft_c2r(p, in, out); }
  static void destroy(plan_type p) { fftw_destroy_plan(p); }
};

template <>
struct api<float> {
  using plan_type = fftwf_plan;
  using complex_type = fftwf_complex;
  static plan_type plan_r2c(int n, float* in, complex_type* out, unsigned flags) {
    return fftwf_plan_dft_r2c_1d(n, in, out, flags);
  }
  static plan_type plan_c2r(int n, complex_type* in, float* out, unsigned flags) {
    return fftwf_plan_dft_c2r_1d(n, in, out, flags);
  }
  static void r2c(plan_type p, float* in, complex_type* out) { fftwf_execute_dft_r2c(p, in, out); }
  static void c2r(plan_type p, complex_type* in, float* out) { fftwf_execute_dft_c2r(p, in, out); }
  static void destroy(plan_type p) { fftwf_destroy_plan(p); }
};

}  // namespace ssm::fft::fftw
