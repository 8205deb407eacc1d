// The sm_90a kernel: one producer warpgroup (TMA) and two consumer warpgroups
// (WGMMA + mLSTM stabilizer math) per CTA, registers rebalanced with setmaxnreg.
// The body compiles only for sm_90a; other archs of the gencode list get an empty
// kernel (the host never launches it there).
#pragma once

#include <cute/arch/cluster_sm90.hpp>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/cutlass.h>

#include "mlstm_fwd_sm90_epilogue.h"
#include "mlstm_fwd_sm90_mainloop.h"

namespace xlstm_sm90 {

template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    mlstm_fwd_sm90_kernel(CUTE_GRID_CONSTANT typename Traits::Params const params) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using SharedStorage = typename Traits::SharedStorage;
  using MainloopPipeline = typename Traits::MainloopPipeline;
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
  }
  if (threadIdx.x == 0) storage.barrier_q.init(/*arrive_count=*/1);

  MainloopPipeline pipeline = make_tma_pipeline<MainloopPipeline>(
      storage.pipeline, Traits::kTmaBytesKV, Traits::kNumMmaThreads);
  __syncthreads();

  // Tile order (1-D grid): the DV slices of one row tile are neighbours, then the
  // row tiles of one (batch, head) from the longest (last) to the shortest, then the
  // heads. CTAs that run together thus stream the same K/V from L2; ordering by head
  // first made every resident CTA read a different head's K/V from DRAM.
  const int64_t m_blocks = (p.S + Traits::kBlockM - 1) / Traits::kBlockM;
  const int dv_splits = p.DV / Traits::kBlockDV;
  const int64_t linear = blockIdx.x;
  TileCoord tile;
  tile.dv_block = static_cast<int>(linear % dv_splits);
  const int64_t mt = linear / dv_splits;
  tile.m_block = static_cast<int>(m_blocks - 1 - mt % m_blocks);
  tile.bh = mt / m_blocks;
  tile.b = tile.bh / p.NH;
  tile.h = tile.bh % p.NH;
  tile.row0 = static_cast<int64_t>(tile.m_block) * Traits::kBlockM;
  const int64_t row_end = tile.row0 + Traits::kBlockM < p.S ? tile.row0 + Traits::kBlockM : p.S;
  tile.n_block_max = static_cast<int>((row_end + Traits::kBlockN - 1) / Traits::kBlockN);

  if (warp_group_idx == 0) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (threadIdx.x == 0) Mainloop::load(params, storage, pipeline, tile);
  } else {
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    const int thread_idx = threadIdx.x - 128;
    typename Traits::TiledMmaO tiled_mma_o;
    Tensor tOrO = partition_fragment_C(tiled_mma_o,
                                       Shape<Int<Traits::kBlockM>, Int<Traits::kBlockDV>>{});
    float m_run[2], b_run[2];
    Mainloop::mma(params, storage, pipeline, tile, thread_idx, tOrO, m_run, b_run);
    Epilogue::store(p, tile, thread_idx, tOrO, m_run, b_run);
  }
#endif
}

}  // namespace xlstm_sm90
