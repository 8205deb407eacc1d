// Entry point of the sm75 family's mLSTM backward: the mma.sync backward of
// csrc/sm80/mlstm_bwd_* built with the Turing atoms (mma.sync m16n8k8, ldmatrix .x2,
// plain 16-byte loads; see MlstmBwdKernelTraits::kSm75). fp16 only; head dims whose
// tiles exceed the GPU's shared memory (64 KB on Turing, e.g. DQK + DV > 320) run the
// ATen backward instead (the dispatcher asks mlstm_bwd_sm75_smem_bytes).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "../mlstm_params.h"

int64_t mlstm_bwd_sm75_smem_bytes(int DQK, int DV);

void run_mlstm_bwd_sm75(const MlstmBackwardParams& params, BackwardPass pass,
                       cudaStream_t stream);

namespace xlstm_sm75 {
// One explicit instantiation per (DQK chunk, DV chunk) lives in instantiations/.
template <int kChunkQK, int kChunkV>
void run_mlstm_bwd_sm75_(const MlstmBackwardParams& params, BackwardPass pass,
                         cudaStream_t stream);
}  // namespace xlstm_sm75
