// The normalizer's terms of the backward: the row scale rden_t = 1 / den_t and the
// normalizer's gradient db_t (the formula: normalizer_terms.h), for every kernel family
// either read off the forward's outputs (FlashAttention's D = rowsum(dO * O), with the
// mLSTM normalizer around it) or, for the sequences where that is not accurate enough,
// from the kernels' row pass. From the forward: b_t is its norm_rows and the dot is
// dh_t . h_t: one read of dh and h instead of the row pass, which recomputes S and dP for
// every tile (2 of the 9 GEMMs per tile pair). normalizer_grad below is that read as a
// kernel of its own; the sm90 dq kernel does it on the tiles it loads anyway, where they
// fit (MlstmBackwardParams::fwd_h_ptr).
//
// Why not always: where one column dominates a row, the normalizer's gradient cancels
// the numerator's, and what is left is the mismatch between the forward's b, u and the
// weights the backward recomputes. The rounding of h and of P (in the forward's P V
// product) is FlashAttention's share of it. Large gate terms add to it: the kernels form
// each log weight in fp32 from terms of magnitude up to about
//   M = max_j |i_j| + |F_{S-1}| + |m0|,
// so forward and backward weights differ by about M * 2^-24 relative. Measured (H100,
// bf16 / fp16, gates |i|, |f| up to 1e4, tests/test_gpu_backward.py "extreme"): dq at
// 1.25x and dv at 4.3x the accuracy rule's bound with forward rows, 0.0x-0.3x with the
// row pass. Typical and floor-regime gates stay within 0.02x of the bound either way.
// A sequence takes the row pass when M > kForwardRowsMaxLogMagnitude (2^11: the
// mismatch stays ~2^-13, below h's own 2^-9 rounding) or M is not finite.
#pragma once

#include <ATen/ATen.h>

#include <utility>

namespace xlstm {

constexpr float kForwardRowsMaxLogMagnitude = 2048.f;

// Shorter sequences take the row pass (which costs little there): most of their rows have
// few columns, and in a row with one column the normalizer's gradient cancels the
// numerator's whatever the gates, leaving the rounding of h (bf16: 2^-9). Measured (H100,
// sm80 backward, S = 1, bf16, DQK = DV = 128): dI at 1.31x the accuracy rule's bound with
// forward rows; the first row of a long sequence is such a row too, but its error is small
// against the others' there.
constexpr int64_t kForwardRowsMinLength = 64;

// The sequences (b, h) whose normalizer terms come from the row pass.
struct RowPassSequences {
  at::Tensor flags;  // (B * NH) int32: 1 where the row pass recomputes the sequence
  at::Tensor list;   // (B * NH) int32: the flagged sequences' indices b * NH + h, in
                     // entries [0, count) (in no particular order)
  at::Tensor count;  // (1) int32, device memory: no host synchronization
};

// ig: (B, NH, S) fp32 contiguous; fcum: (B, NH, S) fp64 contiguous (gate_prefix);
// m0: (B, NH, 1) fp32 contiguous or undefined.
RowPassSequences row_pass_sequences(const at::Tensor& ig, const at::Tensor& fcum,
                                    const at::Tensor& m0);

// dh, h: (B, NH, S, DV), the same dtype, CUDA; norm_rows, m: (B, NH, S) fp32 contiguous
// (the forward's b_t and m_t). Rows of the sequences in `row_pass.flags` take b_t and
// dh_t . u_t from dhu, bsum ((B, NH, S) fp32 contiguous: the row pass, the initial
// state's share added); their other rows are not read. Returns (rden, db), (B, NH, S)
// fp32 contiguous.
std::pair<at::Tensor, at::Tensor> normalizer_grad(const at::Tensor& dh, const at::Tensor& h,
                                                  const at::Tensor& norm_rows,
                                                  const at::Tensor& m, double eps,
                                                  const RowPassSequences& row_pass,
                                                  const at::Tensor& dhu,
                                                  const at::Tensor& bsum);

// Every row from the row pass: rden and db from bsum and dhu ((B, NH, S) fp32 contiguous,
// the initial state's share added) and m. Returns (rden, db), (B, NH, S) fp32 contiguous.
std::pair<at::Tensor, at::Tensor> normalizer_grad_from_row_pass(const at::Tensor& dhu,
                                                                const at::Tensor& bsum,
                                                                const at::Tensor& m, double eps);

}  // namespace xlstm
