// Entry point of the sm_80 family (CUTLASS/CuTe cp.async + mma.sync) of the mLSTM
// parallel forward. Supported: fp16 / bf16, DQK in {64, 128, 256}, DV in
// {64, 128, 256, 512} (any multiple of 128 works as well). Throws on anything else.
#pragma once

#include <cuda_runtime.h>

#include "../mlstm_params.h"

void run_mlstm_fwd_sm80(const MlstmForwardParams& params, cudaStream_t stream);

namespace xlstm_sm80 {
// One explicit instantiation per (dtype, DQK) lives in instantiations/.
template <bool kIsBf16, int kHeadDimQK>
void run_mlstm_fwd_sm80_(const MlstmForwardParams& params, cudaStream_t stream);
}  // namespace xlstm_sm80
