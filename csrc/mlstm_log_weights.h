// The log weights of the backward kernels (docs/semantics.md, "The GPU backward"), for
// the sm80 and sm90 families alike:
//   log2 w_tj = row(t) + col(j),  row(t) = (F_t - F_ref - m_t) log2(e),
//                                 col(j) = (i_j - (F_j - F_ref)) log2(e),
// each formed in fp64 against a reference F_ref of the thread block and rounded once
// to fp32: |F| grows with S, and F_t - F_j must not cancel in fp32.
#pragma once

#include <cstdint>

struct BwdLogWeights {
  const double* fcum;  // F_t = sum_{s<=t} logsigmoid(f_s) of one (batch, head)
  const float* igate;  // i_j
  const float* m;      // the forward's stabilizer m_t
  double f_ref;

  static constexpr double kLog2e = 1.4426950408889634;

  __device__ __forceinline__ float row(int64_t t) const {
    return static_cast<float>((fcum[t] - f_ref - static_cast<double>(m[t])) * kLog2e);
  }
  __device__ __forceinline__ float col(int64_t j) const {
    return static_cast<float>((static_cast<double>(igate[j]) - (fcum[j] - f_ref)) * kLog2e);
  }
};
