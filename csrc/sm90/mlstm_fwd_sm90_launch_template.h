// Host side of the sm_90a family: builds the TMA descriptors from the real strides,
// picks the DV tile and launches. Included only by the instantiation files.
#pragma once

#include <algorithm>
#include <climits>

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include "../cuda_device_info.h"
#include "mlstm_fwd_sm90_api.h"
#include "mlstm_fwd_sm90_kernel.h"

namespace xlstm_sm90 {

template <class Element, int kDQK, int kBlockDV, Schedule kSchedule>
void launch_mlstm_fwd_sm90_schedule(const MlstmForwardParams& p, cudaStream_t stream) {
  using Traits = KernelTraits<Element, kDQK, kBlockDV, kSchedule>;
  TORCH_CHECK(!p.has_c0 || p.c0_lowp_ptr != nullptr,
              "mlstm sm90 forward: internal error: an initial state needs c0_lowp_ptr");
  TORCH_CHECK(p.m_rows_ready,
              "mlstm sm90 forward: internal error: the kernel reads the stabilizer m_rows");
  typename Traits::Params params{p, make_tma_q<typename Traits::Base>(p),
                                 make_tma_k<typename Traits::Base>(p),
                                 make_tma_v<typename Traits::Base>(p),
                                 make_tma_c<typename Traits::Base>(p)};
  constexpr size_t kSmem = sizeof(typename Traits::SharedStorage);
  static_assert(kSmem <= 227 * 1024, "shared memory of the sm90 tile exceeds 227 KB");
  auto kernel = mlstm_fwd_sm90_kernel<Traits>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(kSmem)));
  // Persistent: at most one CTA per SM (a CTA fills an SM's shared memory anyway).
  const int64_t num_work = fwd_num_work<Traits>(p);
  if (num_work == 0) return;
  TORCH_CHECK(p.work_counter != nullptr, "mlstm sm90 forward: no work counter given");
  TORCH_CHECK(num_work < INT_MAX, "mlstm sm90 forward: B * NH * ceil(S / ", Traits::kBlockM,
              ") * DV slices = ", num_work, " work items exceed the limit 2^31 - 1");
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const int64_t num_ctas = std::min<int64_t>(num_work, xlstm::cuda_multiprocessor_count(device));
  const dim3 grid(static_cast<unsigned>(num_ctas));
  kernel<<<grid, Traits::kNumThreads, kSmem, stream>>>(params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The consumer schedule is a compile-time choice per tile (tile_overlap_schedule);
// Schedule in mlstm_fwd_sm90_kernel_traits.h records what each one measured.
template <class Element, int kDQK, int kBlockDV>
void launch_mlstm_fwd_sm90(const MlstmForwardParams& p, cudaStream_t stream) {
  constexpr Schedule kSchedule = tile_overlap_schedule(kDQK, kBlockDV)
                                     ? Schedule::kOverlapPingPong
                                     : Schedule::kSerialPingPong;
  launch_mlstm_fwd_sm90_schedule<Element, kDQK, kBlockDV, kSchedule>(p, stream);
}

template <class Element, int kDQK>
void run_mlstm_fwd_sm90_dv(const MlstmForwardParams& p, cudaStream_t stream) {
  switch (p.DV) {
    case 64: launch_mlstm_fwd_sm90<Element, kDQK, tile_block_dv(64)>(p, stream); break;
    case 128: launch_mlstm_fwd_sm90<Element, kDQK, tile_block_dv(128)>(p, stream); break;
    case 256:  // DV 512 runs as two 256-wide slices in neighbouring CTAs
    case 512: launch_mlstm_fwd_sm90<Element, kDQK, tile_block_dv(256)>(p, stream); break;
    default:
      TORCH_CHECK(false, "mlstm sm90 forward: DV (head dim of v) must be one of 64, 128, 256, "
                  "512, got ", p.DV);
  }
}

template <bool kIsBf16, int kHeadDimQK>
void run_mlstm_fwd_sm90_(const MlstmForwardParams& params, cudaStream_t stream) {
  using Element = std::conditional_t<kIsBf16, cutlass::bfloat16_t, cutlass::half_t>;
  run_mlstm_fwd_sm90_dv<Element, kHeadDimQK>(params, stream);
}

}  // namespace xlstm_sm90
