// Products between kernel inputs (fp16/bf16) and fp32 quantities (states, weighted
// rows) for the state terms of the GPU forward and backward, and the row reductions
// around them.
//
// Where the kernel inputs are bf16, a product runs on tensor cores with fp32
// accumulation: bf16 operands as they are, fp32 ones split into bf16 hi + lo parts
// (equal to the value to about 2^-17 relative; the lo x lo product, ~2^-18, is left
// out), the second product accumulated into the first in place. An fp32 state can
// exceed fp16's range, so with fp16 inputs the products run in fp32.
#pragma once

#include <ATen/ATen.h>

#include <utility>

#include "cuda/state_row_product.h"  // StateRowProduct

namespace xlstm {

// One operand of a state GEMM.
struct GemmOperand {
  at::Tensor value;   // fp32 route: the operand in fp32
  at::Tensor hi, lo;  // bf16 route: its parts (lo undefined when hi is exact)
  GemmOperand t() const;  // the last two dims transposed (a view)
  // The operand rounded to bf16 once (lo dropped; fp32 route unchanged). For k dC into dv
  // in the families that add state rows from the host: the kernels round their weights P
  // to 16 bits for the same products inside a chunk, so the state term then carries the
  // same relative error as the rest of the output, and one GEMM instead of two runs.
  GemmOperand rounded_once() const;
};

// v = x * row_scale[r] * scale (x: bf16, fp16 or fp32 CUDA (..., R, D) with unit last
// stride; row_scale fp32 or undefined) as contiguous bf16 {hi = bf16(v), lo = bf16(v - hi)}.
std::pair<at::Tensor, at::Tensor> split_bf16(const at::Tensor& x, const at::Tensor& row_scale,
                                             double scale);

// x * row_scale[r] * scale as a GEMM operand. x: (..., R, D) view with unit last stride
// (bf16, fp16 or fp32); row_scale: fp32 with x's shape minus the last dim, or undefined.
// input_dtype (the kernel inputs' dtype) picks the route.
GemmOperand gemm_operand(const at::Tensor& x, at::ScalarType input_dtype,
                         const at::Tensor& row_scale = at::Tensor(), double scale = 1.0);

// a @ b in fp32: a (..., M, K), b (..., K, N) with equal leading dims.
at::Tensor gemm_f32(const GemmOperand& a, const GemmOperand& b);

// Per sequence (leading dims), sum_j r_j a_j b_j^T in fp32 and, with want_row_sum, also
// sum_j r_j a_j: a (..., L, DA), b (..., L, DB) with unit last stride, r (..., L) fp32.
// The fused kernel of scaled_outer_sum.h where it applies (bf16), else the GEMM route
// above. Returns {sum of outer products (..., DA, DB), row sum (..., DA) or undefined}.
std::pair<at::Tensor, at::Tensor> weighted_outer_sum(const at::Tensor& a, const at::Tensor& r,
                                                     const at::Tensor& b,
                                                     at::ScalarType input_dtype,
                                                     bool want_row_sum);

// Every row times a per-sequence fp32 state: out_t = a_t M with M = scale * state
// (transpose_state false; state (..., K, N)) or scale * state^T (true; state (..., N, K)),
// the state split into hi + lo (split) or rounded to bf16 once; with c (..., L, N), also
// the row dots c_t . out_t and c_t . y (y (..., N), or undefined -> 0). The fused kernel
// of state_row_product.h where it applies (bf16), else the GEMM route and row_dots.
StateRowProduct rows_times_state(const at::Tensor& a, const at::Tensor& state,
                                 bool transpose_state, double scale, bool split,
                                 at::ScalarType input_dtype, const at::Tensor& c = at::Tensor(),
                                 const at::Tensor& y = at::Tensor());

// A per-sequence fp32 state (..., K, N) for the kernels' tensor cores: {x = scale * state /
// factor in the input dtype, contiguous, factor}. Rounded once, x is (..., K, N); with
// split, (..., 2K, N): rows [0, K) hi = x rounded, rows [K, 2K) lo = (x - hi) rounded (hi +
// lo equals x to about 2^-17 relative for bf16, 2^-22 for fp16). factor (...) fp32 is a
// power of two that brings the largest |scale * state| of a sequence under 2^14 (fp16's
// range ends at 65504, and a state is a sum of up to S weighted outer products); bf16
// has fp32's range and gets no factor (undefined).
std::pair<at::Tensor, at::Tensor> state_for_tensor_cores(const at::Tensor& state,
                                                         at::ScalarType input_dtype,
                                                         double scale, bool split);

// Per row r of a (..., R, D) (fp16/bf16 view, unit last stride), with G = R / group rows:
//   dot_x[r] = a[r] . x[r]        x: fp32 contiguous like a, or undefined (-> 0)
//   dot_y[r] = a[r] . y[r / group] y: fp32 contiguous (..., G, D), or undefined (-> 0)
// Returns {dot_x, dot_y}, fp32 with a's shape minus the last dim.
std::pair<at::Tensor, at::Tensor> row_dots(const at::Tensor& a, const at::Tensor& x,
                                           const at::Tensor& y);

}  // namespace xlstm
