// Dispatch of the sm_90a backward: dtype x DQK to the instantiations.
#include "mlstm_bwd_sm90_api.h"

#include <c10/util/Exception.h>

#include "tma_extents.h"

void run_mlstm_bwd_sm90(const MlstmBackwardParams& p, BackwardPass pass, cudaStream_t stream) {
  using namespace xlstm_sm90;
  TORCH_CHECK(mlstm_bwd_sm90_supports(p.DQK, p.DV),
              "mlstm sm90 backward: head dims must be in {64, 128, 256} and not both 256, got "
              "DQK=", p.DQK, ", DV=", p.DV);
  check_tma_extents("mlstm sm90 backward", p.B, p.NH, p.S);
  const bool bf16 = p.is_bf16;
  switch (p.DQK) {
    case 64: bf16 ? run_mlstm_bwd_sm90_<true, 64>(p, pass, stream) : run_mlstm_bwd_sm90_<false, 64>(p, pass, stream); break;
    case 128: bf16 ? run_mlstm_bwd_sm90_<true, 128>(p, pass, stream) : run_mlstm_bwd_sm90_<false, 128>(p, pass, stream); break;
    default: bf16 ? run_mlstm_bwd_sm90_<true, 256>(p, pass, stream) : run_mlstm_bwd_sm90_<false, 256>(p, pass, stream); break;
  }
}
