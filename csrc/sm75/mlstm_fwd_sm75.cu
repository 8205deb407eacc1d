// Launch of the sm_75 family forward (kernel in mlstm_fwd_sm75_kernel.cuh).
#include "mlstm_fwd_sm75_kernel.cuh"

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include "mlstm_fwd_sm75_api.h"

namespace xlstm_sm75 {
namespace {

template <int kDQK>
void launch(const MlstmForwardParams& p, cudaStream_t stream) {
  const size_t smem = sizeof(__half) * (kBlockN * (kDQK + kPad) + kBlockN * (kBlockDV + kPad)) +
                      sizeof(float) * kBlockN;
  static_assert(sizeof(__half) * (kBlockN * (256 + kPad) + kBlockN * (kBlockDV + kPad)) +
                        sizeof(float) * kBlockN <= 48 * 1024,
                "shared memory must fit the 48 KB every GPU >= 7.5 grants without opt-in");
  const dim3 grid(static_cast<unsigned>(p.B * p.NH),
                  static_cast<unsigned>((p.S + kBlockM - 1) / kBlockM),
                  static_cast<unsigned>(p.DV / kBlockDV));
  mlstm_fwd_sm75_kernel<kDQK><<<grid, kThreads, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace
}  // namespace xlstm_sm75

void run_mlstm_fwd_sm75(const MlstmForwardParams& p, cudaStream_t stream) {
  using namespace xlstm_sm75;
  TORCH_CHECK(!p.is_bf16, "mlstm sm75 forward: the sm75 kernel family supports float16 only "
              "(Turing has no bfloat16 tensor cores); use float16, or backend='sm80' on an "
              "Ampere or newer GPU for bfloat16");
  TORCH_CHECK(p.DV % kBlockDV == 0 && p.DV >= 64 && p.DV <= 512,
              "mlstm sm75 forward: DV (head dim of v) must be one of 64, 128, 256, 512, got ", p.DV);
  TORCH_CHECK(p.S / kBlockM < 65535, "mlstm sm75 forward: S = ", p.S, " exceeds the grid limit");
  switch (p.DQK) {
    case 64: launch<64>(p, stream); break;
    case 128: launch<128>(p, stream); break;
    case 256: launch<256>(p, stream); break;
    default:
      TORCH_CHECK(false, "mlstm sm75 forward: DQK (head dim of q and k) must be one of 64, 128, "
                  "256, got ", p.DQK);
  }
}
