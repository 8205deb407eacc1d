// Entry point of the sm_80 family's mLSTM backward (CuTe cp.async + mma.sync; also
// what 9.x GPUs run until an sm_90a backward exists). Supported: fp16 / bf16, DQK
// and DV equal to 64 or a multiple of 128, shared memory permitting.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "../mlstm_params.h"

// Bytes of dynamic shared memory the largest of the three backward kernels needs at
// these head dims (0 when the head dims are not supported at all).
int64_t mlstm_bwd_sm80_smem_bytes(int DQK, int DV);

void run_mlstm_bwd_sm80(const MlstmBackwardParams& params, BackwardPass pass,
                       cudaStream_t stream);

namespace xlstm_sm80 {
// One explicit instantiation per (dtype, DQK chunk, DV chunk) lives in instantiations/.
template <bool kIsBf16, int kChunkQK, int kChunkV>
void run_mlstm_bwd_sm80_(const MlstmBackwardParams& params, BackwardPass pass,
                         cudaStream_t stream);
}  // namespace xlstm_sm80
