// The sm_90a kernel: one producer warpgroup (TMA) and two consumer warpgroups
// (WGMMA + mLSTM stabilizer math) per CTA, registers rebalanced with setmaxnreg.
// Persistent: one CTA per SM works through (row tile, DV slice, batch*head) items
// claimed from an atomic counter; the next item's Q and first K/V tiles load while
// the consumers finish the current item and store its output.
// The body compiles only for sm_90a; other archs of the gencode list get an empty
// kernel (the host never launches it there).
#pragma once

#include <cute/arch/cluster_sm90.hpp>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/cutlass.h>

#include "mlstm_fwd_sm90_epilogue.h"
#include "mlstm_fwd_sm90_mainloop.h"

namespace xlstm_sm90 {

// Work items: B * NH * ceil(S / kBlockM) * DV slices.
template <class Traits>
CUTLASS_HOST_DEVICE int64_t fwd_num_work(const MlstmForwardParams& p) {
  return p.B * p.NH * ((p.S + Traits::kBlockM - 1) / Traits::kBlockM) * (p.DV / Traits::kBlockDV);
}

// Item order: the DV slices of one row tile are neighbours, then the row tiles of one
// (batch, head) from the longest (last) to the shortest, then the heads. Items in
// flight together thus stream the same K/V from L2 (ordering by head first made
// every resident CTA read a different head's K/V from DRAM), and dynamic claiming
// starts the long tiles first. 32-bit math (the host checks that the item count
// fits): the producer runs it within its 24 registers.
template <class Traits>
CUTLASS_DEVICE TileCoord fwd_tile(const MlstmForwardParams& p, int work) {
  const int m_blocks = static_cast<int>((p.S + Traits::kBlockM - 1) / Traits::kBlockM);
  const int dv_splits = p.DV / Traits::kBlockDV;
  const int nh = static_cast<int>(p.NH);
  TileCoord tile;
  tile.dv_block = work % dv_splits;
  const int mt = work / dv_splits;
  tile.m_block = m_blocks - 1 - mt % m_blocks;
  const int bh = mt / m_blocks;
  tile.bh = bh;
  tile.b = bh / nh;
  tile.h = bh % nh;
  tile.row0 = static_cast<int64_t>(tile.m_block) * Traits::kBlockM;
  const int64_t row_end = tile.row0 + Traits::kBlockM < p.S ? tile.row0 + Traits::kBlockM : p.S;
  tile.n_block_max = static_cast<int>((row_end + Traits::kBlockN - 1) / Traits::kBlockN);
  return tile;
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    mlstm_fwd_sm90_kernel(CUTE_GRID_CONSTANT typename Traits::Params const params) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using SharedStorage = typename Traits::SharedStorage;
  using MainloopPipeline = typename Traits::MainloopPipeline;
  using PipelineState = typename Traits::PipelineState;
  using Mainloop = CollectiveMainloop<Traits>;
  using Epilogue = CollectiveEpilogue<Traits>;
  extern __shared__ __align__(1024) char smem_buf[];
  SharedStorage& storage = *reinterpret_cast<SharedStorage*>(smem_buf);

  const MlstmForwardParams& p = params.p;
  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int warp_group_idx = cutlass::canonical_warp_group_idx();

  if (warp_idx == 0 && cute::elect_one_sync()) {
    cute::prefetch_tma_descriptor(params.tma_q.get_tma_descriptor());
    cute::prefetch_tma_descriptor(params.tma_k.get_tma_descriptor());
    cute::prefetch_tma_descriptor(params.tma_v.get_tma_descriptor());
    if (p.c0_lowp_ptr != nullptr) cute::prefetch_tma_descriptor(params.tma_c.get_tma_descriptor());
  }
  if (threadIdx.x == 0) {
    storage.barrier_q.init(/*arrive_count=*/1);
    storage.barrier_q_empty.init(/*arrive_count=*/Traits::kNumMmaThreads);
  }

  MainloopPipeline pipeline = make_tma_pipeline<MainloopPipeline>(
      storage.pipeline, Traits::kTmaBytesKV, Traits::kNumMmaThreads,
      Mainloop::kStageProducerArrivals);
  __syncthreads();

  // Persistent: CTA c takes item c, then the next unclaimed one from the work counter.
  // Item k of this CTA: its id goes to storage.work[k % 2] before barrier_q's phase k
  // completes (the TMA bytes of its Q, or a plain arrive carrying the end-of-work id
  // num_work).
  const int num_work = static_cast<int>(fwd_num_work<Traits>(p));
  if (warp_group_idx == 0) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (warp_idx == 0) {  // the producer warp; lane 0 claims items and issues the TMAs
      const int lane = threadIdx.x;
      PipelineState write = cutlass::make_producer_start_state<MainloopPipeline>();
      int w = blockIdx.x;
      for (int item = 0;; ++item) {
        if (item > 0) storage.barrier_q_empty.wait((item - 1) & 1);
        if (lane == 0) storage.work[item & 1] = w < num_work ? w : num_work;
        if (w >= num_work) {
          if (lane == 0) storage.barrier_q.arrive();
          break;
        }
        Mainloop::load(params, storage, pipeline, write, fwd_tile<Traits>(p, w), lane);
        int next = 0;
        if (lane == 0) next = gridDim.x + atomicAdd(p.work_counter, 1);
        w = __shfl_sync(0xffffffff, next, 0);
      }
    }
  } else {
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    const int thread_idx = threadIdx.x - 128;
    PipelineState read;
    for (int item = 0;; ++item) {
      storage.barrier_q.wait(item & 1);
      const int w = storage.work[item & 1];
      if (w >= num_work) break;
      const TileCoord tile = fwd_tile<Traits>(p, w);
      typename Traits::TiledMmaO tiled_mma_o;
      Tensor tOrO = partition_fragment_C(tiled_mma_o,
                                         Shape<Int<Traits::kBlockM>, Int<Traits::kBlockDV>>{});
      float m_run[2], b_run[2];
      Mainloop::mma(params, storage, pipeline, read, tile, thread_idx, tOrO, m_run, b_run);
      Epilogue::store(p, tile, thread_idx, tOrO, m_run, b_run);
    }
  }
#endif
}

}  // namespace xlstm_sm90
