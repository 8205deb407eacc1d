// Launch of the mma.sync mLSTM backward for one (dtype, chunk widths) combination, on
// one stream: pass kRowDotProducts runs kDhu; pass kGradients runs kDKV (or kDK and
// kDV), then kDQ. Shared by the sm80 family and (kSm75) the sm75 family.
#pragma once

#include <algorithm>
#include <climits>

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include "mlstm_bwd_kernel.h"
#include "mlstm_bwd_kernel_traits.h"
#include "mlstm_bwd_sm80_api.h"

namespace xlstm_sm80 {

template <class Traits>
void launch_mlstm_bwd_kind(const MlstmBackwardParams& params, cudaStream_t stream) {
  const int64_t n_qk = params.DQK / Traits::kChunkQK, n_v = params.DV / Traits::kChunkV;
  const int64_t num_out = Traits::kKind == BwdKind::kDV    ? n_v
                          : Traits::kKind == BwdKind::kDhu ? 1
                          : Traits::kKind == BwdKind::kDKV ? std::max(n_qk, n_v)
                                                           : n_qk;
  const int64_t num_tiles = (params.S + Traits::kBlockM - 1) / Traits::kBlockM;
  const int64_t num_blocks = num_out * num_tiles * params.B * params.NH;
  TORCH_CHECK(num_blocks <= INT_MAX, "mlstm sm80 backward: B*NH*S*D is too large for one launch (",
              num_blocks, " thread blocks)");
  if (num_blocks == 0) return;
  auto kernel = &mlstm_bwd_sm80_kernel<Traits>;
  const int64_t smem = Traits::smem_bytes(params.DQK, params.DV);
  if (smem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(smem)));
  }
  kernel<<<dim3(unsigned(num_blocks)), Traits::kNThreads, size_t(smem), stream>>>(params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Head dims the backward takes: 64, or a multiple of 128 (processed in 128-column chunks).
inline bool bwd_head_dim_ok(int d) { return d == 64 || (d > 0 && d % 128 == 0); }
inline int bwd_chunk_of(int d) { return d == 64 ? 64 : 128; }

// The whole backward (both passes) for one element type and chunk widths; kSm75 builds
// the Turing variant (m16n8k8, no cp.async, 32 streamed rows for its 64 KB of smem).
template <class Element, int kChunkQK, int kChunkV, bool kSm75>
struct MlstmBwdRunner {
  static constexpr int kN = kSm75 ? 32 : 64;
  template <BwdKind kKind, int kBlockN = kN>
  using Traits = MlstmBwdKernelTraits<Element, kChunkQK, kChunkV, kKind, 64, kBlockN, kSm75>;

  // Largest dynamic shared memory of the kernels this runner launches.
  static int64_t smem_bytes(int DQK, int DV) {
    return std::max(Traits<BwdKind::kDQ>::smem_bytes(DQK, DV),
                    Traits<BwdKind::kDV>::smem_bytes(DQK, DV));
  }

  static void run(const MlstmBackwardParams& params, BackwardPass pass, cudaStream_t stream) {
    if (pass == BackwardPass::kRowDotProducts) {
      launch_mlstm_bwd_kind<Traits<BwdKind::kDhu>>(params, stream);
      return;
    }
    // dK and dV from one score tile (kDKV) where every dV chunk has a dK chunk beside
    // it; with more DV chunks than DQK chunks (e.g. DQK 128, DV 256) the extra slices
    // would redo the dP tile for nothing, and two passes measured faster (NOTES,
    // session 2). kDKV streams 32 rows: with the dK and dV accumulators (64 registers
    // each) a 64-row score tile spills (ptxas: 255 registers, 552 bytes of spill loads).
    if (params.DV / kChunkV <= params.DQK / kChunkQK) {
      launch_mlstm_bwd_kind<Traits<BwdKind::kDKV, 32>>(params, stream);
    } else {
      launch_mlstm_bwd_kind<Traits<BwdKind::kDK>>(params, stream);
      launch_mlstm_bwd_kind<Traits<BwdKind::kDV>>(params, stream);
    }
    launch_mlstm_bwd_kind<Traits<BwdKind::kDQ>>(params, stream);
  }
};

template <bool kIsBf16, int kChunkQK, int kChunkV>
void run_mlstm_bwd_sm80_(const MlstmBackwardParams& params, BackwardPass pass,
                         cudaStream_t stream) {
  using Element = std::conditional_t<kIsBf16, cutlass::bfloat16_t, cutlass::half_t>;
  MlstmBwdRunner<Element, kChunkQK, kChunkV, /*kSm75=*/false>::run(params, pass, stream);
}

}  // namespace xlstm_sm80
