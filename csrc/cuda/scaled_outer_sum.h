// The state increment of a chunk (and the gradient reaching a state from its rows) as one
// tensor-core kernel: per sequence, out = sum_j r_j a_j b_j^T in fp32.
//
// The state GEMMs of state_gemm.h need r_j a_j (a bf16 input row times an fp32 weight) to
// about 2^-17, so they split it into bf16 hi + lo tensors in memory and run two GEMMs.
// Here the split happens in registers between the global load and shared memory: a and b
// are read once, nothing of sequence length is written, and one pass adds both products.
#pragma once

#include <ATen/ATen.h>

#include <utility>

namespace xlstm {

// Whether scaled_outer_sum takes these operands: bf16 CUDA tensors on a device of compute
// capability >= 8.0, head dims multiples of 64, unit last stride, 16-byte aligned rows.
bool scaled_outer_sum_supported(const at::Tensor& a, const at::Tensor& b);

// a: (B, H, L, DA), b: (B, H, L, DB) bf16; r: (B, H, L) fp32. Returns
//   out (B, H, DA, DB) fp32: out[z] = sum_j r[z, j] a[z, j] b[z, j]^T, and
//   with want_row_sum, sum (B, H, DA) fp32: sum[z] = sum_j r[z, j] a[z, j] (plain fp32
//   sums, no rounding to 16 bits); otherwise an undefined tensor.
std::pair<at::Tensor, at::Tensor> scaled_outer_sum(const at::Tensor& a, const at::Tensor& r,
                                                   const at::Tensor& b, bool want_row_sum);

}  // namespace xlstm
