#pragma once
/// \file scan_operands.hpp
/// The selective scan's operands, from the caller's views (`ScanView`, `ScanMatrix`) to what the
/// kernels read, and the boundary checks on them.
///
/// The real kernel reads every operand where the caller keeps it when its layout fits (the views are
/// strided: element (i, j) at data[i row_stride + j col_stride]); only an operand laid out otherwise
/// is copied, once per call, into a rearranged buffer (`ScanScratch`). What fits:
///  - real A (D x N): any strides (the kernels copy their lanes' part of it once per call);
///  - B, C per step / grouped (L x G N): each step's G N values contiguous (col_stride 1: a row-major
///    matrix, or the transpose of a column-major (G N) x L one), any stride between steps;
///    constant (D x N): each channel's N values contiguous (col_stride 1), any stride between channels;
///  - z (L x D): each channel's time contiguous (row_stride 1), any stride between channels;
///  - D and delta_bias: contiguous vectors.
/// So the Mamba block's operands, and any column-major L x D sequence, are read in place; a
/// column-major L x N B (a plain MatrixX) is transposed into a (G N) x L copy. The complex kernel
/// always works on split real and imaginary copies.

#include "ssm/core/error.hpp"
#include "ssm/core/types.hpp"
#include "ssm/detail/complex_scan.hpp"
#include "ssm/detail/scan_lanes.hpp"

#include <Eigen/Core>

namespace ssm::detail {

/// Storage for the operands that had to be rearranged; untouched (and unallocated) when none had to.
template <class Scalar>
struct ScanScratch {
  MatrixX<Scalar> B, C, B_im, C_im, z;
  VectorX<Scalar> delta_bias, skip;
};

/// Checks a B or C view against its kind: D x N constant, L x N per step, L x (G N) grouped with G
/// dividing D. Builds no message unless it fails (so the step path allocates nothing).
template <class M>
void check_scan_matrix(const M& m, Index L, Index D, Index N, const char* where, const char* name) {
  using Kind = typename M::Kind;
  switch (m.kind) {
    case Kind::constant:
      check_shape(m.values.map(), D, N, where, name, "D x N, constant");
      break;
    case Kind::per_step:
      check_shape(m.values.map(), L, N, where, name, "L x N, per step");
      break;
    case Kind::grouped:
      if (!(m.groups >= 1 && D % m.groups == 0))
        check(false, where, name, concat("a group count G >= 1 dividing D = ", D), concat("G = ", m.groups));
      check_shape(m.values.map(), L, m.groups * N, where, name, "L x (G N), grouped");
      break;
  }
}

/// A real B or C as the kernel's operand: in place when each vector's N values are contiguous, else
/// transposed into `store` (N x D constant, (G N) x L per step).
template <class Scalar, class M>
ScanOperand<Scalar> real_operand(const M& m, Index D, Index N, MatrixX<Scalar>& store) {
  using Kind = typename M::Kind;
  const auto& v = m.values;
  ScanOperand<Scalar> o;
  o.constant = m.kind == Kind::constant;
  const Index groups = m.kind == Kind::grouped ? m.groups : 1;
  o.group_size = D / groups;
  if (v.cols() <= 1 || v.col_stride() == 1) {
    o.data = v.data();
    o.stride = o.constant ? 0 : v.row_stride();
    o.channel_stride = o.constant ? v.row_stride() : 0;
  } else {
    store = v.map().transpose();
    o.data = store.data();
    o.stride = o.constant ? 0 : groups * N;
    o.channel_stride = o.constant ? N : 0;
  }
  return o;
}

/// A complex B or C split into real and imaginary parts, transposed (N x D constant, (G N) x L per step).
template <class Scalar, class M>
ComplexOperand<Scalar> complex_operand(const M& m, Index D, Index N, MatrixX<Scalar>& re, MatrixX<Scalar>& im) {
  using Kind = typename M::Kind;
  ComplexOperand<Scalar> o;
  o.constant = m.kind == Kind::constant;
  const Index groups = m.kind == Kind::grouped ? m.groups : 1;
  o.group_size = D / groups;
  re = m.values.map().real().transpose();
  im = m.values.map().imag().transpose();
  o.re = re.data();
  o.im = im.data();
  o.stride = o.constant ? 0 : groups * N;
  return o;
}

/// A vector view (D) as a contiguous pointer: in place when contiguous, else copied into `store`;
/// nullptr when the view is empty (the option is not given).
template <class Scalar, class V>
const Scalar* contiguous_vector(const V& v, VectorX<Scalar>& store) {
  if (v.size() == 0) return nullptr;
  if (v.size() == 1 || v.stride() == 1) return v.data();
  store.resize(v.size());
  for (Index i = 0; i < v.size(); ++i) store[i] = v[i];
  return store.data();
}

/// An L x D view (the gate z) as channel columns contiguous over time: returns the pointer and sets
/// ld (scalars between channels); in place when row_stride is 1, else copied into `store`.
template <class Scalar, class V>
const Scalar* channel_columns(const V& v, MatrixX<Scalar>& store, Index& ld) {
  if (v.size() == 0) return nullptr;
  if (v.rows() <= 1 || v.row_stride() == 1) {
    ld = v.col_stride();
    return v.data();
  }
  store = v.map();
  ld = store.rows();
  return store.data();
}

}  // namespace ssm::detail
