// Chunkwise mLSTM forward/backward written with ATen tensor ops.
//
// This is the portable implementation: it runs on any device ATen supports (the
// CPU op, and the CUDA op until a per-architecture kernel takes over a case). It
// keeps O(S) memory: the sequence is cut into chunks of `chunk_size`; inside a chunk
// the quadratic form is used, across chunks the (C, n, m) state is carried.
// Math follows docs/semantics.md; arithmetic is float32 (float64 for float64 inputs).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace xlstm {

// A distinct 0-element tensor for an output that was not requested (outputs of an op
// must not alias each other). Used by every implementation of the ops.
inline at::Tensor not_requested_output(const at::TensorOptions& options) {
  return at::empty({0}, options);
}

struct ForwardOutputs {
  at::Tensor h;          // (B, NH, S, DV), input dtype
  at::Tensor m_rows;     // (B, NH, S), stabilizer m_t
  at::Tensor norm_rows;  // (B, NH, S), signed normalizer b_t (before |.| and the floor)
  at::Tensor c_last;     // (B, NH, DQK, DV) or empty when not requested
  at::Tensor n_last;     // (B, NH, DQK) or empty
  at::Tensor m_last;     // (B, NH, 1) or empty
};

struct BackwardOutputs {
  at::Tensor dq, dk, dv, di, df;
  at::Tensor dc_initial;  // empty when no c_initial was given
  at::Tensor dn_initial;  // empty when no n_initial was given
};

ForwardOutputs mlstm_chunkwise_forward_aten(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& i, const at::Tensor& f,
    const std::optional<at::Tensor>& c_initial,
    const std::optional<at::Tensor>& n_initial,
    const std::optional<at::Tensor>& m_initial,
    double eps, bool return_last_states, int64_t chunk_size);

BackwardOutputs mlstm_chunkwise_backward_aten(
    const at::Tensor& dh,
    const std::optional<at::Tensor>& dc_last,
    const std::optional<at::Tensor>& dn_last,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& i, const at::Tensor& f,
    const std::optional<at::Tensor>& c_initial,
    const std::optional<at::Tensor>& n_initial,
    const std::optional<at::Tensor>& m_initial,
    const at::Tensor& h, const at::Tensor& m_rows, const at::Tensor& norm_rows,
    double eps, int64_t chunk_size);

}  // namespace xlstm
