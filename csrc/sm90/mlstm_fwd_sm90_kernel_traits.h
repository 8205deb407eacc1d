// CuTe types of the sm_90a family for one (element type, DQK, DV tile): WGMMA
// tiled MMAs, swizzled shared-memory layouts, TMA copy types, shared storage and
// the kernel's parameter struct.
#pragma once

#include <cute/tensor.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/numeric_types.h>
#include <cutlass/pipeline/pipeline.hpp>

#include "../mlstm_params.h"
#include "mlstm_fwd_sm90_tile_size.h"
#include "sm90_utils.h"

namespace xlstm_sm90 {

using namespace cute;

template <typename Element_, int kDQK_, int kBlockDV_>
struct TileTraits {
  using Element = Element_;
  using ElementAccum = float;
  static constexpr int kDQK = kDQK_;
  static constexpr int kBlockDV = kBlockDV_;
  static constexpr int kBlockM = xlstm_sm90::kBlockM;
  static constexpr int kBlockN = tile_block_n(kDQK, kBlockDV);
  static constexpr int kStages = tile_stages(kDQK, kBlockDV, kBlockN);
  static constexpr int kNumMmaWarpGroups = kBlockM / 64;
  static constexpr int kNumMmaThreads = kNumMmaWarpGroups * 128;
  static constexpr int kNumThreads = kNumMmaThreads + 128;  // + one producer warpgroup
  // setmaxnreg budgets (FA3's split for two consumer warpgroups): 24 + 2 x 240 = 504
  // registers per thread triple. The CTA's pool is what the launch allotted, 168 x 384 =
  // 504 x 128: a producer budget above 24 would leave the consumers' allocation waiting
  // forever. The producer warp's column terms fit in 24 (no local memory in its SASS).
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;
  static_assert(kNumMmaWarpGroups == 2, "register budgets assume two consumer warpgroups");
  static_assert(kDQK % 64 == 0 && kBlockDV % 64 == 0, "128-byte swizzle atoms are 64 wide");

  using TileShapeS = Shape<Int<kBlockM>, Int<kBlockN>, Int<kDQK>>;    // S = Q K^T
  using TileShapeO = Shape<Int<kBlockM>, Int<kBlockDV>, Int<kBlockN>>;  // O += P V
  using AtomLayout = Layout<Shape<Int<kNumMmaWarpGroups>, _1, _1>>;   // warpgroups along M
  using TiledMmaS = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, ElementAccum, TileShapeS>(), AtomLayout{}));
  // P comes from registers (RS); V^T is an MN-major B operand (DV contiguous in smem).
  using TiledMmaO = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, ElementAccum, TileShapeO, GMMA::Major::K,
                           GMMA::Major::MN>(),
      AtomLayout{}));

  // O += Q C0 for the initial state (c0_lowp_ptr): Q from shared memory (SS), C0 an
  // MN-major B operand streamed through the V stages. C0 comes as hi rows then lo rows
  // ((2 DQK, DV) per sequence); a V stage holds kBlockN of those rows, so the state
  // takes kStatePieces stages (rows past 2 DQK arrive zero-filled and are not read), and
  // state row r pairs with Q's column r % DQK.
  using TiledMmaC = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, ElementAccum, TileShapeO, GMMA::Major::K,
                           GMMA::Major::MN>(),
      AtomLayout{}));
  static constexpr int kStateRowsTotal = 2 * kDQK;
  static constexpr int kStatePieces = (kStateRowsTotal + kBlockN - 1) / kBlockN;

  // Q, K, V tiles are row-major with the head dim contiguous (K-major for WGMMA):
  // 128-byte swizzle atoms of 8 x 64 elements, no bank conflicts for TMA or WGMMA.
  using SmemLayoutAtom = GMMA::Layout_K_SW128_Atom<Element>;
  using SmemLayoutQ = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockM>, Int<kDQK>>{}));
  using SmemLayoutK = decltype(tile_to_shape(
      SmemLayoutAtom{}, Shape<Int<kBlockN>, Int<kDQK>, Int<kStages>>{}));
  using SmemLayoutV = decltype(tile_to_shape(
      SmemLayoutAtom{}, Shape<Int<kBlockN>, Int<kBlockDV>, Int<kStages>>{}));
  // The same V buffer seen as (DV, N, stage): a transposed view, not a copy.
  using SmemLayoutVt = decltype(composition(
      SmemLayoutV{}, make_ordered_layout(Shape<Int<kBlockDV>, Int<kBlockN>, Int<kStages>>{},
                                         Step<_2, _1, _3>{})));

};

template <class T>
auto make_tma_q(const MlstmForwardParams& p) {
  using E = typename T::Element;
  return make_tma_copy(SM90_TMA_LOAD{},
                       gmem_tensor<E>(p.q_ptr, p.S, T::kDQK, p.NH, p.B, p.q_row_stride,
                                      p.q_head_stride, p.q_batch_stride),
                       typename T::SmemLayoutQ{}, Shape<Int<T::kBlockM>, Int<T::kDQK>>{}, _1{});
}
template <class T>
auto make_tma_k(const MlstmForwardParams& p) {
  using E = typename T::Element;
  return make_tma_copy(SM90_TMA_LOAD{},
                       gmem_tensor<E>(p.k_ptr, p.S, T::kDQK, p.NH, p.B, p.k_row_stride,
                                      p.k_head_stride, p.k_batch_stride),
                       take<0, 2>(typename T::SmemLayoutK{}),
                       Shape<Int<T::kBlockN>, Int<T::kDQK>>{}, _1{});
}
template <class T>
auto make_tma_v(const MlstmForwardParams& p) {
  using E = typename T::Element;
  return make_tma_copy(SM90_TMA_LOAD{},
                       gmem_tensor<E>(p.v_ptr, p.S, p.DV, p.NH, p.B, p.v_row_stride,
                                      p.v_head_stride, p.v_batch_stride),
                       take<0, 2>(typename T::SmemLayoutV{}),
                       Shape<Int<T::kBlockN>, Int<T::kBlockDV>>{}, _1{});
}

// C0 as the kernel reads it, (2 DQK, DV) per (batch, head) (hi, lo), in V-stage boxes. Without an
// initial state the descriptor points at v and is never used.
template <class T>
auto make_tma_c(const MlstmForwardParams& p) {
  using E = typename T::Element;
  const void* c0 = p.c0_lowp_ptr != nullptr ? p.c0_lowp_ptr : p.v_ptr;
  const int64_t state = static_cast<int64_t>(T::kStateRowsTotal) * p.DV;
  return make_tma_copy(SM90_TMA_LOAD{},
                       gmem_tensor<E>(c0, T::kStateRowsTotal, p.DV, p.NH, p.B, p.DV, state,
                                      p.NH * state),
                       take<0, 2>(typename T::SmemLayoutV{}),
                       Shape<Int<T::kBlockN>, Int<T::kBlockDV>>{}, _1{});
}

// Consumer schedules (tile_overlap_schedule in mlstm_fwd_sm90_tile_size.h picks one
// per tile). H100, bf16, B*S = 65536, persistent kernel with 3 K/V stages where they fit
// (session 5, benchmarks/NOTES.md), ms serial ping-pong / overlap:
//   kSerialPingPong: per tile S = QK^T, exponentials, O += PV one after the other;
//       FA3's warp-scheduler barrier orders the S WGMMAs of the two consumer
//       warpgroups so one's exponentials run under the other's MMAs. Kept where it is
//       faster: DQK/DV 128/128 (S 1024: 1.79 / 2.14, S 4096: 4.95 / 6.03; the 128-wide S
//       and O tiles plus the overlap's live P leave the exponentials too few registers)
//       and 256/256 (two stages only: 5.45 / 6.18 at S 4096).
//   kOverlapPingPong: FA3's intra-warpgroup overlap (S_n and P_{n-1}V_{n-1} issued
//       together, exponentials of tile n under the latter) plus ping-pong. Faster for
//       the other tiles measured, S 4096: 128/256 4.45 -> 4.23, 64/256 4.08 -> 3.69,
//       256/128 4.22 -> 3.71, 64/64 2.08 -> 1.88, 256/64 3.66 -> 3.35.
//   kSerial: serial without the barrier (slower than kSerialPingPong, session 1).
//   Issuing P_{n-1}V_{n-1} and S_n together under the barrier and waiting for both
//   (FA3's ping-pong without overlap) measured 14 % slower than kSerialPingPong at
//   128/128 (2.05 vs 1.79 ms at S 1024) and was dropped.
// Column terms of one key tile j0 .. j0 + kBlockN - 1, shared by both consumer
// warpgroups, with c_j = (F_j - F_j0) - i_j (+inf past S) and cmin = min_j c_j of the
// tile: `v` holds the factors exp(cmin - c_j) <= 1 (0 past S) when `factored`, else
// the terms c_j themselves (masked tiles whose c_j spread too far to factor; see
// CollectiveMainloop::store_columns).
// 16-byte aligned: the consumers read `v` of every stage as float2.
template <int kBlockN>
struct alignas(16) StageColumns {
  float v[kBlockN];
  float f_ref_rel;  // F_j0 - F_row0, row0 the item's first row
  float cmin;
  int factored;
};

enum class Schedule { kSerial = 0, kSerialPingPong = 1, kOverlapPingPong = 2 };

template <typename Element_, int kDQK_, int kBlockDV_, Schedule kSchedule_>
struct KernelTraits : TileTraits<Element_, kDQK_, kBlockDV_> {
  using Base = TileTraits<Element_, kDQK_, kBlockDV_>;
  static constexpr Schedule kSchedule = kSchedule_;
  using typename Base::Element;
  using Base::kBlockM;
  using Base::kBlockN;
  using Base::kBlockDV;
  using Base::kDQK;
  using Base::kStages;
  using Base::kNumMmaWarpGroups;
  using typename Base::SmemLayoutQ;
  using typename Base::SmemLayoutK;
  using typename Base::SmemLayoutV;
  using TmaQ = decltype(make_tma_q<Base>(std::declval<const MlstmForwardParams&>()));
  using TmaK = decltype(make_tma_k<Base>(std::declval<const MlstmForwardParams&>()));
  using TmaV = decltype(make_tma_v<Base>(std::declval<const MlstmForwardParams&>()));
  using TmaC = decltype(make_tma_c<Base>(std::declval<const MlstmForwardParams&>()));

  static constexpr uint32_t kTmaBytesQ = kBlockM * kDQK * sizeof(Element);
  static constexpr uint32_t kTmaBytesKV = kBlockN * (kDQK + kBlockDV) * sizeof(Element);

  using MainloopPipeline = cutlass::PipelineTmaAsync<kStages>;
  using PipelineState = cutlass::PipelineState<kStages>;

  struct SharedStorage {
    // 1024-byte alignment: the 128-byte swizzle pattern repeats every 8 rows x 128 B.
    array_aligned<Element, cosize_v<SmemLayoutQ>, 1024> smem_q;
    array_aligned<Element, cosize_v<SmemLayoutK>, 1024> smem_k;
    array_aligned<Element, cosize_v<SmemLayoutV>, 1024> smem_v;
    // Per K/V stage, written by the producer warp and published by the stage's full
    // barrier: the key tile's column terms (see StageColumns).
    StageColumns<kBlockN> cols[kStages];
    typename MainloopPipeline::SharedStorage pipeline;
    int work[2];  // work item ids, by item parity (see the kernel)
    cutlass::arch::ClusterTransactionBarrier barrier_q;  // Q of an item has arrived ...
    cutlass::arch::ClusterBarrier barrier_q_empty;       // ... and been read
  };

  struct Params {
    MlstmForwardParams p;
    TmaQ tma_q;
    TmaK tma_k;
    TmaV tma_v;
    TmaC tma_c;
  };
};

}  // namespace xlstm_sm90
