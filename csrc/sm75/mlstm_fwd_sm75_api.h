// Entry point of the sm_75 family (hand-written mma.sync PTX) of the mLSTM
// parallel forward: fp16, DQK in {64, 128, 256}, DV in {64, 128, 256, 512}.
#pragma once

#include <cuda_runtime.h>

#include "../mlstm_params.h"

void run_mlstm_fwd_sm75(const MlstmForwardParams& params, cudaStream_t stream);
