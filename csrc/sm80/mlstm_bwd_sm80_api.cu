// Dispatch of the sm_80 backward: dtype -> chunk widths of the two head dims. A .cu
// file because the shared-memory size comes from the (CuTe) kernel traits.
#include "mlstm_bwd_sm80_api.h"

#include <c10/util/Exception.h>

#include "mlstm_bwd_launch_template.h"

using xlstm_sm80::bwd_chunk_of;
using xlstm_sm80::bwd_head_dim_ok;

int64_t mlstm_bwd_sm80_smem_bytes(int DQK, int DV) {
  if (!bwd_head_dim_ok(DQK) || !bwd_head_dim_ok(DV)) return 0;
  // Element size and chunk widths do not change the footprint at given (DQK, DV).
  return xlstm_sm80::MlstmBwdRunner<cutlass::half_t, 128, 128, false>::smem_bytes(DQK, DV);
}

void run_mlstm_bwd_sm80(const MlstmBackwardParams& params, BackwardPass pass,
                       cudaStream_t stream) {
  TORCH_CHECK(bwd_head_dim_ok(params.DQK) && bwd_head_dim_ok(params.DV),
              "mlstm sm80 backward: head dims must be 64 or a multiple of 128, got DQK=",
              params.DQK, ", DV=", params.DV);
  const int cqk = bwd_chunk_of(params.DQK), cv = bwd_chunk_of(params.DV);
  auto by_chunks = [&](auto bf16_tag) {
    constexpr bool kBf16 = decltype(bf16_tag)::value;
    if (cqk == 64 && cv == 64) xlstm_sm80::run_mlstm_bwd_sm80_<kBf16, 64, 64>(params, pass, stream);
    else if (cqk == 64) xlstm_sm80::run_mlstm_bwd_sm80_<kBf16, 64, 128>(params, pass, stream);
    else if (cv == 64) xlstm_sm80::run_mlstm_bwd_sm80_<kBf16, 128, 64>(params, pass, stream);
    else xlstm_sm80::run_mlstm_bwd_sm80_<kBf16, 128, 128>(params, pass, stream);
  };
  if (params.is_bf16) by_chunks(std::true_type{});
  else by_chunks(std::false_type{});
}
