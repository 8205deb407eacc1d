// Per-row terms of the backward (docs/semantics.md, "Gradients"), one warp per row:
//   a2_t = (F_t - m_t) log2(e),  c2_t = (i_t - F_t) log2(e)   (from fp64 F_t),
//   den_t = max(|b_t|, exp(-m_t)) + eps,  rden_t = 1 / den_t,
//   db_t = -(dh_t . h_t) rden_t sign(b_t) [|b_t| > exp(-m_t)]   (fp32 dot product).
#pragma once

#include <ATen/ATen.h>

namespace xlstm {

struct BackwardRowTerms {
  at::Tensor a2, c2, rden, db;  // (B, NH, S) fp32, contiguous
};

// dh, h: (B, NH, S, DV) fp16/bf16/fp32 with unit last stride; fcum: (B, NH, S) fp64
// contiguous; igate, m_rows, norm_rows: (B, NH, S) fp32 contiguous.
BackwardRowTerms mlstm_backward_row_terms(const at::Tensor& dh, const at::Tensor& h,
                                          const at::Tensor& fcum, const at::Tensor& igate,
                                          const at::Tensor& m_rows, const at::Tensor& norm_rows,
                                          double eps);

}  // namespace xlstm
