// Every row of a chunk times the chunk's fp32 state, as one tensor-core kernel:
// out_t = a_t M with M = scale * state or scale * state^T, and optionally the row dots
// c_t . out_t and c_t . y that the backward needs next to it.
//
// The GEMM route of state_gemm.h splits the state into bf16 hi + lo tensors, runs one
// GEMM per part (the second re-reads and re-writes the fp32 output), and a separate
// kernel re-reads the output for the row dots. Here the state is split in registers as
// it enters shared memory, both parts go into one accumulator, and the row dots are
// taken from the accumulator before it is stored.
#pragma once

#include <ATen/ATen.h>

namespace xlstm {

struct StateRowProduct {
  at::Tensor out;    // (B, H, L, N) fp32 (undefined unless wanted)
  at::Tensor dot_x;  // (B, H, L) fp32: c_t . out_t (undefined without c)
  at::Tensor dot_y;  // (B, H, L) fp32: c_t . y (undefined without c and y)
};

// Whether state_row_product takes these operands: a (and c) bf16 CUDA (B, H, L, K) /
// (B, H, L, N) views with unit last stride and 16-byte aligned rows, K and N multiples of
// 64, K <= 256, on a device of compute capability >= 8.0.
bool state_row_product_supported(const at::Tensor& a, int64_t N, const at::Tensor& c);

// a: (B, H, L, K) bf16; state: (B, H, K, N) fp32 (transpose_state = false) or
// (B, H, N, K) (transpose_state = true); split: the state enters as bf16 hi + lo
// (about 2^-17 relative) or rounded to bf16 once. c: (B, H, L, N) bf16 or undefined;
// y: (B, H, N) fp32 or undefined.
StateRowProduct state_row_product(const at::Tensor& a, const at::Tensor& state,
                                  bool transpose_state, double scale, bool split,
                                  const at::Tensor& c, const at::Tensor& y);

}  // namespace xlstm
