// Entry point of the sm_90a family's mLSTM backward (CuTe WGMMA + TMA,
// warp-specialized). Supported: fp16 / bf16, DQK and DV in {64, 128, 256}, not both
// 256; the dispatcher runs the sm80 family's backward for other head dims.
#pragma once

#include <cuda_runtime.h>

#include "../mlstm_params.h"

// Stationary 128 x (DQK + DV) plus two 64 x (DQK + DV) streamed stages must fit 227 KB
// of shared memory, hence not both 256.
constexpr bool mlstm_bwd_sm90_supports(int DQK, int DV) {
  auto ok = [](int d) { return d == 64 || d == 128 || d == 256; };
  return ok(DQK) && ok(DV) && !(DQK == 256 && DV == 256);
}

// Whether the dq kernel forms the normalizer terms rden, db itself from the forward's h
// (MlstmBackwardParams::fwd_h_ptr): its 128 x DV tile of h must fit next to the other
// tiles, (128 + 2 x 64) x (DQK + DV) 16-bit elements, with 4 KB for the rest: all but
// DQK 128 / DV 256 (and 256 / 256, which this family does not run).
constexpr bool mlstm_bwd_sm90_forms_normalizer_terms(int DQK, int DV) {
  return mlstm_bwd_sm90_supports(DQK, DV) &&
         (128 + 2 * 64) * (DQK + DV) * 2 + 128 * DV * 2 + 4096 <= 227 * 1024;
}

void run_mlstm_bwd_sm90(const MlstmBackwardParams& params, BackwardPass pass,
                        cudaStream_t stream);

namespace xlstm_sm90 {
// One explicit instantiation per (dtype, DQK) lives in instantiations/ (all DV).
template <bool kIsBf16, int kDQK>
void run_mlstm_bwd_sm90_(const MlstmBackwardParams& params, BackwardPass pass,
                         cudaStream_t stream);
}  // namespace xlstm_sm90
