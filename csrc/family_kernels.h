// Launchers of the per-architecture kernel families (they take MlstmForwardParams or
// MlstmBackwardParams), declared only when the family is in the build (XLSTM_FAMILY_*
// defines from setup.py). Tensors reach them through run_parallel_forward/_backward.
#pragma once

#ifdef XLSTM_WITH_CUDA
#include "cuda/chunkwise_host.h"         // run_chunkwise_forward/_backward/_final_state
#include "cuda/parallel_backward_host.h"  // run_parallel_backward, BackwardLauncher
#include "cuda/parallel_forward_host.h"   // run_parallel_forward, ForwardLauncher
#endif

#ifdef XLSTM_FAMILY_SM75
#include "sm75/mlstm_bwd_sm75_api.h"  // run_mlstm_bwd_sm75: fp16 (the sm80 backward's Turing build)
#include "sm75/mlstm_fwd_sm75_api.h"  // run_mlstm_fwd_sm75: fp16
#endif
#ifdef XLSTM_FAMILY_SM80
#include "sm80/mlstm_bwd_sm80_api.h"  // run_mlstm_bwd_sm80: fp16, bf16 (also 9.x head dims sm90 lacks)
#include "sm80/mlstm_fwd_sm80_api.h"  // run_mlstm_fwd_sm80: fp16, bf16
#endif
#ifdef XLSTM_FAMILY_SM90
#include "sm90/mlstm_bwd_sm90_api.h"  // run_mlstm_bwd_sm90: fp16, bf16 (sm_90a only)
#include "sm90/mlstm_fwd_sm90_api.h"  // run_mlstm_fwd_sm90: fp16, bf16 (sm_90a only)
#endif
