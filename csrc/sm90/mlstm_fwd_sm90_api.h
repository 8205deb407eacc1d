// Entry point of the sm_90a family (CuTe WGMMA + TMA, warp-specialized) of the
// mLSTM parallel forward. Supported: fp16 / bf16, DQK in {64, 128, 256}, DV in
// {64, 128, 256, 512}. Only compute capability 9.0 runs it. Throws on anything else.
#pragma once

#include <cuda_runtime.h>

#include "../mlstm_params.h"

void run_mlstm_fwd_sm90(const MlstmForwardParams& params, cudaStream_t stream);

namespace xlstm_sm90 {
// One explicit instantiation per (dtype, DQK) lives in instantiations/; it covers
// every DV (the DV tile is picked from the tile table in mlstm_fwd_sm90_tile_size.h).
template <bool kIsBf16, int kHeadDimQK>
void run_mlstm_fwd_sm90_(const MlstmForwardParams& params, cudaStream_t stream);
}  // namespace xlstm_sm90
