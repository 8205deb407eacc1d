// Tile choice and launch of the sm_80 mLSTM parallel forward.
#pragma once

#include <climits>
#include <type_traits>

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <cutlass/numeric_types.h>

#include "mlstm_fwd_kernel.h"
#include "mlstm_fwd_kernel_traits.h"
#include "mlstm_fwd_sm80_api.h"
#include "static_switch.h"

namespace xlstm_sm80 {

template <class Traits, bool Has_C0>
void launch_mlstm_fwd(const MlstmForwardParams& params, cudaStream_t stream) {
  const int64_t num_m_blocks = (params.S + Traits::kBlockM - 1) / Traits::kBlockM;
  const int64_t num_dv_blocks = params.DV / Traits::kHeadDimV;
  const int64_t num_blocks = num_dv_blocks * num_m_blocks * params.B * params.NH;
  TORCH_CHECK(num_blocks <= INT_MAX, "mlstm sm80 forward: B*NH*S*DV is too large for one launch (",
              num_blocks, " thread blocks)");
  if (num_blocks == 0) return;
  auto kernel = &mlstm_fwd_sm80_kernel<Traits, Has_C0>;
  constexpr int kSmem = Traits::kSmemSize;
  if (kSmem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  }
  kernel<<<dim3(unsigned(num_blocks)), Traits::kNThreads, kSmem, stream>>>(params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Tile table (measured on H100, bf16, B*S = 65536, DQK = DV = 128):
//  * 4 warps x 32 rows, kBlockN 32: each warp reuses its K/V fragments for two 16-row
//    MMA tiles, halving ldmatrix traffic per MMA versus 8 warps x 16 rows, and two
//    CTAs share an SM: 7.1 ms vs 8.8 ms at S = 4096 (308 vs 250 TFLOP/s).
//  * 8 warps x 16 rows, kBlockN 64 for DQK = 256 (a 64 KB Q tile leaves room for only
//    one 4-warp CTA per SM on A100) and for kernels with C0, whose fp32-accurate state
//    prologue spills at 32 rows per warp.
// A CTA owns at most 128 DV columns (the fp32 O accumulator); wider DV is split over
// CTAs, which recompute the scores.
template <int kHeadDimQK, bool Has_C0>
struct MlstmFwdTileSm80 {
  static constexpr bool kTwoRowTiles = kHeadDimQK <= 128 && !Has_C0;
  static constexpr int kNWarps = kTwoRowTiles ? 4 : 8;
  static constexpr int kBlockM = 128;
  static constexpr int kBlockN = kTwoRowTiles ? 32 : 64;
};

template <bool kIsBf16, int kHeadDimQK>
void run_mlstm_fwd_sm80_(const MlstmForwardParams& params, cudaStream_t stream) {
  using Element = std::conditional_t<kIsBf16, cutlass::bfloat16_t, cutlass::half_t>;
  BOOL_SWITCH(params.has_c0, Has_C0, [&] {
    using Tile = MlstmFwdTileSm80<kHeadDimQK, Has_C0>;
    if (params.DV == 64) {
      launch_mlstm_fwd<MlstmFwdKernelTraits<kHeadDimQK, 64, Tile::kBlockM, Tile::kBlockN,
                                            Tile::kNWarps, Element>, Has_C0>(params, stream);
    } else if (params.DV % 128 == 0) {
      launch_mlstm_fwd<MlstmFwdKernelTraits<kHeadDimQK, 128, Tile::kBlockM, Tile::kBlockN,
                                            Tile::kNWarps, Element>, Has_C0>(params, stream);
    } else {
      TORCH_CHECK(false, "mlstm sm80 forward: DV (head dim of v) must be 64 or a multiple of 128 "
                  "(64, 128, 256, 512), got ", params.DV);
    }
  });
}

}  // namespace xlstm_sm80
