// Explicit instantiation of the sm_90a backward for fp16, DQK = 64 (all DV).
#include "../mlstm_bwd_sm90_launch_template.h"

template void xlstm_sm90::run_mlstm_bwd_sm90_<false, 64>(const MlstmBackwardParams&, BackwardPass,
                                                       cudaStream_t);
