// One explicit instantiation per (dtype, DQK chunk, DV chunk) so that ninja compiles them in parallel.
#include "../mlstm_bwd_launch_template.h"

template void xlstm_sm80::run_mlstm_bwd_sm80_<true, 64, 128>(const MlstmBackwardParams&, BackwardPass,
                                                                   cudaStream_t);
