// The gates' prefix terms that every kernel family reads, in one pass over the gates
// (instead of a chain of ATen ops: cast, logsigmoid, cumsum, cummax, ...).
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace xlstm {

struct GatePrefix {
  at::Tensor fcum;  // (B, NH, S) fp64: F_t = sum_{s<=t} logsigmoid(f_s)
  at::Tensor m;     // (B, NH, S) fp32: m_t = F_t + max(m0, max_{j<=t}(i_j - F_j)), or undefined
};

// f: (B, NH, S) floating point, CUDA; ig: (B, NH, S) fp32 contiguous (the input gate,
// needed only with want_m); m0: (B, NH, 1) fp32 contiguous or undefined (0). m_t is
// the mLSTM stabilizer of row t (docs/semantics.md), formed in fp64 and rounded once;
// NaN gates do not enter the maximum (as fmax), they reach h through the weights.
GatePrefix gate_prefix(const at::Tensor& f, const at::Tensor& ig, const at::Tensor& m0,
                       bool want_m);

// The backward of F: dF_t = sigmoid(-f_t) * sum_{s >= t} d_s with
// d_s = rowsum_s - colsum_s (+ row_add_s) (+ last_add at s = S - 1), in fp64, in one pass
// (instead of cast, flip, cumsum, flip, sigmoid, multiply). f: (B, NH, S) floating point,
// CUDA; rowsum, colsum, row_add: (B, NH, S) fp32, row_add possibly undefined; last_add:
// (B, NH) fp32 or undefined. Returns dF contiguous in f's dtype.
at::Tensor forget_gate_grad(const at::Tensor& f, const at::Tensor& rowsum,
                            const at::Tensor& colsum, const at::Tensor& row_add,
                            const at::Tensor& last_add);

}  // namespace xlstm
