// Explicit instantiation of the sm_90a forward for bf16, DQK = 64 (all DV tiles).
#include "../mlstm_fwd_sm90_launch_template.h"

template void xlstm_sm90::run_mlstm_fwd_sm90_<true, 64>(const MlstmForwardParams&, cudaStream_t);
