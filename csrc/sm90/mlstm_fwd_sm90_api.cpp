// Entry point of the sm_90a family: validates what this family supports and
// dispatches dtype x DQK to the instantiations (one .cu each, compiled in parallel).
#include "mlstm_fwd_sm90_api.h"

#include <c10/util/Exception.h>

#include "tma_extents.h"

void run_mlstm_fwd_sm90(const MlstmForwardParams& p, cudaStream_t stream) {
  using namespace xlstm_sm90;
  TORCH_CHECK(p.DV == 64 || p.DV == 128 || p.DV == 256 || p.DV == 512,
              "mlstm sm90 forward: DV (head dim of v) must be one of 64, 128, 256, 512, got ",
              p.DV);
  check_tma_extents("mlstm sm90 forward", p.B, p.NH, p.S);
  const bool bf16 = p.is_bf16;
  switch (p.DQK) {
    case 64: bf16 ? run_mlstm_fwd_sm90_<true, 64>(p, stream) : run_mlstm_fwd_sm90_<false, 64>(p, stream); break;
    case 128: bf16 ? run_mlstm_fwd_sm90_<true, 128>(p, stream) : run_mlstm_fwd_sm90_<false, 128>(p, stream); break;
    case 256: bf16 ? run_mlstm_fwd_sm90_<true, 256>(p, stream) : run_mlstm_fwd_sm90_<false, 256>(p, stream); break;
    default:
      TORCH_CHECK(false, "mlstm sm90 forward: DQK (head dim of q and k) must be one of 64, 128, "
                  "256, got ", p.DQK);
  }
}
