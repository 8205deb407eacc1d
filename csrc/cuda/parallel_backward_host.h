// Host side of the GPU mLSTM backward (the parallel algorithm): row statistics, the
// initial/final-state terms (ATen), the two kernel passes, and dF.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include <functional>
#include <optional>
#include <tuple>
#include <utility>

#include "mlstm_params.h"

namespace xlstm {

using BackwardLauncher = void (*)(const MlstmBackwardParams&, BackwardPass, cudaStream_t);

// What a caller that runs the backward on the chunks of a longer sequence (the
// chunkwise algorithm, csrc/cuda/chunkwise_host.cpp) changes. Each "sequence" of the
// call is then one chunk, its initial state the state entering the chunk, and its
// final-state gradient depends on the rows of all later chunks: the caller computes
// it from this call's per-chunk state increments.
struct ChunkedBackward {
  // (B, NH, S) bool, false on rows that only pad the last chunk (their rden and db are
  // set to 0, so they add nothing); undefined: no padding.
  at::Tensor row_valid;
  // (B, NH, 1) fp32: the stabilizer of each chunk's end state (the last row's m is
  // not it where that row is padding).
  at::Tensor m_final;
  // (dC_inc, dn_inc) -> (dC_end, dn_end): given, per chunk, the gradient reaching its
  // initial state from its own rows, (B, NH, DQK, DV) and (B, NH, DQK) fp32, returns
  // the gradient of the state leaving each chunk.
  std::function<std::pair<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&)>
      final_state_grads;
};

// Returns (dq, dk, dv, di, df, dc_initial, dn_initial). With `chunked`, dc_last and
// dn_last are ignored and dc_initial, dn_initial are not computed (0-element tensors).
// `state_on_tensor_cores`: the launcher's kernels form the state terms of dq, dk, dv
// themselves from 16-bit states (MlstmBackwardParams::c_lowp / dc_lowp, the sm90
// family); else they add fp32 rows computed here.
// h, norm_rows: the forward's output and normalizer rows b_t, or undefined. Where both
// are defined, no C0 was given and not `chunked`, the normalizer's
// gradient comes from dh . h (normalizer_grad.h) instead of the kernels' row pass (which
// recomputes every score tile once more), except for sequences with large gate terms.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
run_parallel_backward(const at::Tensor& dh, const std::optional<at::Tensor>& dc_last,
                      const std::optional<at::Tensor>& dn_last, const at::Tensor& q,
                      const at::Tensor& k, const at::Tensor& v, const at::Tensor& i,
                      const at::Tensor& f, const std::optional<at::Tensor>& c0,
                      const std::optional<at::Tensor>& n0, const std::optional<at::Tensor>& m0,
                      const at::Tensor& m_rows, const at::Tensor& h,
                      const at::Tensor& norm_rows, double eps, BackwardLauncher launch,
                      bool state_on_tensor_cores, const ChunkedBackward* chunked = nullptr);

}  // namespace xlstm
