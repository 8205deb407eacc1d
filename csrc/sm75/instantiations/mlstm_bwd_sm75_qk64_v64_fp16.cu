// One explicit instantiation per (DQK chunk, DV chunk) so that ninja compiles them in parallel.
#include "../mlstm_bwd_sm75_api.h"
#include "../../sm80/mlstm_bwd_launch_template.h"

template <>
void xlstm_sm75::run_mlstm_bwd_sm75_<64, 64>(const MlstmBackwardParams& params,
                                                  BackwardPass pass, cudaStream_t stream) {
  xlstm_sm80::MlstmBwdRunner<cutlass::half_t, 64, 64, /*kSm75=*/true>::run(params, pass,
                                                                                stream);
}
