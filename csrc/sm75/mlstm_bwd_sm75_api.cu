// Dispatch of the sm75 backward: chunk widths of the two head dims (fp16 only).
#include "mlstm_bwd_sm75_api.h"

#include <c10/util/Exception.h>

#include "../sm80/mlstm_bwd_launch_template.h"

using xlstm_sm80::bwd_chunk_of;
using xlstm_sm80::bwd_head_dim_ok;

int64_t mlstm_bwd_sm75_smem_bytes(int DQK, int DV) {
  if (!bwd_head_dim_ok(DQK) || !bwd_head_dim_ok(DV)) return 0;
  return xlstm_sm80::MlstmBwdRunner<cutlass::half_t, 128, 128, true>::smem_bytes(DQK, DV);
}

void run_mlstm_bwd_sm75(const MlstmBackwardParams& params, BackwardPass pass,
                        cudaStream_t stream) {
  TORCH_CHECK(!params.is_bf16, "mlstm sm75 backward: float16 only (Turing has no bf16 MMA)");
  TORCH_CHECK(bwd_head_dim_ok(params.DQK) && bwd_head_dim_ok(params.DV),
              "mlstm sm75 backward: head dims must be 64 or a multiple of 128, got DQK=",
              params.DQK, ", DV=", params.DV);
  const int cqk = bwd_chunk_of(params.DQK), cv = bwd_chunk_of(params.DV);
  if (cqk == 64 && cv == 64) xlstm_sm75::run_mlstm_bwd_sm75_<64, 64>(params, pass, stream);
  else if (cqk == 64) xlstm_sm75::run_mlstm_bwd_sm75_<64, 128>(params, pass, stream);
  else if (cv == 64) xlstm_sm75::run_mlstm_bwd_sm75_<128, 64>(params, pass, stream);
  else xlstm_sm75::run_mlstm_bwd_sm75_<128, 128>(params, pass, stream);
}
