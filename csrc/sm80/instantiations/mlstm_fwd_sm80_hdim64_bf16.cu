// One explicit instantiation per (dtype, DQK) so that ninja compiles them in parallel.
#include "../mlstm_fwd_launch_template.h"

template void xlstm_sm80::run_mlstm_fwd_sm80_<true, 64>(const MlstmForwardParams&, cudaStream_t);
