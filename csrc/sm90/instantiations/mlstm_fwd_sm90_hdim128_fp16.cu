// Explicit instantiation of the sm_90a forward for fp16, DQK = 128 (all DV tiles).
#include "../mlstm_fwd_sm90_launch_template.h"

template void xlstm_sm90::run_mlstm_fwd_sm90_<false, 128>(const MlstmForwardParams&, cudaStream_t);
