// Host side of the kernel families' backward: turns validated tensors into
// MlstmBackwardParams and runs
//   1. the family's pass kRowDotProducts: per row, the normalizer b_t and dh_t . u_t
//      (u = the unrounded numerator) with the backward's own weights, plus their
//      initial-state parts, give den_t and the normalizer's gradient db_t;
//   2. the per-row terms (1 / den_t, db_t), elementwise in ATen;
//   3. the initial-state and final-state terms, O(S * D^2) ATen batched matmuls in
//      fp32, handed to the kernels as fp32 addends;
//   4. the family's pass kGradients (the quadratic part: dq, dk, dv, dI, row sums);
//   5. dF = row sums - column sums, and df as its reverse cumulative sum.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include <optional>
#include <tuple>

#include "mlstm_params.h"

namespace xlstm {

using BackwardLauncher = void (*)(const MlstmBackwardParams&, BackwardPass, cudaStream_t);

// Returns (dq, dk, dv, di, df, dc_initial, dn_initial), as the op's schema.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
run_parallel_backward(const at::Tensor& dh, const std::optional<at::Tensor>& dc_last,
                      const std::optional<at::Tensor>& dn_last, const at::Tensor& q,
                      const at::Tensor& k, const at::Tensor& v, const at::Tensor& i,
                      const at::Tensor& f, const std::optional<at::Tensor>& c0,
                      const std::optional<at::Tensor>& n0, const std::optional<at::Tensor>& m0,
                      const at::Tensor& h, const at::Tensor& m_rows,
                      const at::Tensor& norm_rows, double eps, BackwardLauncher launch);

}  // namespace xlstm
