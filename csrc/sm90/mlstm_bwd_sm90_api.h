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

void run_mlstm_bwd_sm90(const MlstmBackwardParams& params, BackwardPass pass,
                        cudaStream_t stream);

namespace xlstm_sm90 {
// One explicit instantiation per (dtype, DQK) lives in instantiations/ (all DV).
template <bool kIsBf16, int kDQK>
void run_mlstm_bwd_sm90_(const MlstmBackwardParams& params, BackwardPass pass,
                         cudaStream_t stream);
}  // namespace xlstm_sm90
