// CuTe types of the sm_90a mLSTM backward (docs/semantics.md, "Gradients") for one
// (element type, DQK, DV, kind): WGMMA tiled MMAs, swizzled shared-memory layouts, TMA
// copy types and shared storage. Three kinds, the roles of the sm80 kernels
// (csrc/sm80/mlstm_bwd_kernel_traits.h) with WGMMA:
//
//   kDhu  row-stationary:    q_t, dh_t of 128 rows stay; k_j, v_j stream. Row sums of
//                            w * s * (dh . v) (= dh_t . u_t) and w * s (= b_t). Runs first.
//   kDQ   row-stationary:    dq chunk += dS K, row sums of dS * s. Runs before the
//                            column kinds: it may form their rden and db (fwd_h_ptr).
//   kDKV  column-stationary: k_j, v_j of 128 columns stay; q_t, dh_t stream.
//                            dk chunk += dS^T Q, dv chunk += (w s rden)^T dH, column
//                            sums of dS * s (dI). Chunks [0, min(nQK, nV)).
//   kDK   kDKV's dk part alone, for the chunks [nV, nQK) of a DQK wider than DV.
//   kDV   kDKV's dv part alone (no dP), for the chunks [nQK, nV) of a DV wider than DQK.
//
// Every score tile (S and dP, 64 stationary x 64 streamed rows per consumer
// warpgroup) has the stationary side as the WGMMA's M dimension, so the tile that
// feeds the output GEMM is already the A operand in registers (RS WGMMA): no
// shared-memory round trip, no atomics, each output element written by one CTA
// (bitwise reproducible).
#pragma once

#include <cute/tensor.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/numeric_types.h>
#include <cutlass/pipeline/pipeline.hpp>

#include <type_traits>

#include "../mlstm_params.h"
#include "mlstm_bwd_sm90_api.h"
#include "sm90_utils.h"

namespace xlstm_sm90 {

using namespace cute;

// The value indexes MlstmBackwardParams::work_counters.
enum class BwdKind : int { kDhu = 0, kDQ = 1, kDKV = 2, kDK = 3, kDV = 4 };
static_assert(kNumWorkCounters >= 5);

template <class Element_, int kDQK_, int kDV_, BwdKind kKind_>
struct BwdTraits {
  using Element = Element_;
  using ElementAccum = float;
  static constexpr int kDQK = kDQK_;
  static constexpr int kDV = kDV_;
  static constexpr BwdKind kKind = kKind_;
  static_assert(mlstm_bwd_sm90_supports(kDQK, kDV));
  static constexpr bool kRowStationary = kKind == BwdKind::kDhu || kKind == BwdKind::kDQ;
  // Which output GEMMs run: dq or dk (the Y_qk chunk), dv (the Y_v chunk); and whether
  // the dP tile is needed (all but kDV).
  static constexpr bool kOutQK = kKind == BwdKind::kDQ || kKind == BwdKind::kDKV ||
                                 kKind == BwdKind::kDK;
  static constexpr bool kOutV = kKind == BwdKind::kDKV || kKind == BwdKind::kDV;
  static constexpr bool kNeedsDP = kKind != BwdKind::kDV;

  static constexpr int kBlockM = 128;  // stationary rows: two consumer warpgroups x 64
  static constexpr int kBlockN = 64;   // streamed rows per step
  // Streamed-tile pipeline depth. Measured on an H100 (bf16, NH 32, 128/128, fwd+bwd,
  // B*S = 65536, S = 1024 / 4096): 2 stages 10.20 / 28.41 ms, 3 stages 10.08 / 28.10,
  // 2 stages + ping-pong 9.92 / 27.76, 3 + ping-pong 9.95 / 27.67: two suffice.
  static constexpr int kStages = 2;
  // The two consumer warpgroups take turns issuing their score GEMMs (as the forward).
  static constexpr bool kPingPong = true;
  static constexpr int kNumMmaWarpGroups = 2;
  static constexpr int kNumMmaThreads = 256;
  static constexpr int kNumThreads = kNumMmaThreads + 128;  // + one producer warpgroup
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;

  // Output GEMMs write chunks of at most 128 columns (a 64 x 128 fp32 accumulator per
  // warpgroup is 64 registers per thread; kDKV holds a dK and a dV chunk). Wider head
  // dims run their chunks in neighbouring CTAs, each recomputing the score tiles.
  static constexpr int kChunkQK = kDQK < 128 ? kDQK : 128;
  static constexpr int kChunkV = kDV < 128 ? kDV : 128;
  static constexpr int kNumChunksQK = kDQK / kChunkQK;
  static constexpr int kNumChunksV = kDV / kChunkV;
  static constexpr int kMinChunks = kNumChunksQK < kNumChunksV ? kNumChunksQK : kNumChunksV;
  // Output chunks [kFirstChunk, kFirstChunk + kNumOutSlices) of this kind.
  static constexpr int kFirstChunk = kKind == BwdKind::kDK || kKind == BwdKind::kDV ? kMinChunks : 0;
  static constexpr int kNumOutSlices = kKind == BwdKind::kDhu  ? 1
                                       : kKind == BwdKind::kDQ  ? kNumChunksQK
                                       : kKind == BwdKind::kDKV ? kMinChunks
                                       : kKind == BwdKind::kDK  ? kNumChunksQK - kMinChunks
                                                                : kNumChunksV - kMinChunks;

  using AtomLayout = Layout<Shape<Int<kNumMmaWarpGroups>, _1, _1>>;  // warpgroups along M
  // S = X_qk Y_qk^T and dP = X_hv Y_hv^T: both operands K-major in shared memory.
  using TiledMmaS = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, ElementAccum,
                           Shape<Int<kBlockM>, Int<kBlockN>, Int<kDQK>>>(),
      AtomLayout{}));
  using TiledMmaP = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, ElementAccum,
                           Shape<Int<kBlockM>, Int<kBlockN>, Int<kDV>>>(),
      AtomLayout{}));
  // out chunk += T Y_chunk: T (dS, dS^T or P^T) from registers, the streamed chunk as
  // an MN-major B operand (its columns are contiguous in shared memory).
  template <int kChunk>
  using TiledMmaOut = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, ElementAccum,
                           Shape<Int<kBlockM>, Int<kChunk>, Int<kBlockN>>, GMMA::Major::K,
                           GMMA::Major::MN>(),
      AtomLayout{}));
  using TiledMmaOutQK = TiledMmaOut<kChunkQK>;
  using TiledMmaOutV = TiledMmaOut<kChunkV>;

  // State terms (MlstmBackwardParams::c_lowp / dc_lowp), formed before the streamed
  // tiles: the 16-bit state (DQK x DV) streams through the Y_v stages in pieces of
  // kBlockN rows (state rows = DQK index). dq / dk columns of a piece: X_v piece^T with
  // TiledMmaP (K = DV), into the score accumulator, then scaled into the output one.
  // dv chunk: X_qk[:, piece rows] piece[:, chunk] summed over all pieces (SS, the
  // piece's chunk an MN-major B operand as in TiledMmaOut), scaled at the end.
  // Each state comes as a hi and a lo part (MlstmBackwardParams::c_lowp), streamed one
  // after the other; every product is summed over both.
  static constexpr int kStateParts = 2;
  static constexpr int kPiecesPerPart = kDQK / kBlockN;
  static constexpr int kPiecesPerChunkQK = kChunkQK / kBlockN;
  // The state's row dot q_t . (dh_t C^T) (MlstmBackwardParams::q_dh_c_ptr), over all
  // pieces: kDhu forms it. kDKV / kDK dot k_j with their dk chunk's state terms
  // instead, once after the pieces (k_dk_state_ptr); forming that dot per piece as
  // kDhu does made kDKV's consumer warpgroups spill (390 spill instructions at 128/128).
  static constexpr bool kStateDot = kKind == BwdKind::kDhu;
  static_assert(kChunkQK == 128 || kNumChunksQK == 1,
                "k_dk_state_ptr has one slot per 128 columns of DQK");
  // Pieces per part an item reads: all where a dv chunk or a row dot needs them (they
  // sum over all state rows), else those of the item's dq / dk chunk.
  static constexpr int kStatePieces =
      kOutV || kStateDot ? kPiecesPerPart : kPiecesPerChunkQK;
  using TiledMmaStateV = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, ElementAccum,
                           Shape<Int<kBlockM>, Int<kChunkV>, Int<kBlockN>>, GMMA::Major::K,
                           GMMA::Major::MN>(),
      AtomLayout{}));

  // Row-major tiles, head dim contiguous, 128-byte swizzle atoms of 8 x 64 elements.
  // tile_to_shape stacks the atoms down the rows first, so every 64-column block of a
  // tile (and so every output chunk) is one contiguous, canonically swizzled block.
  using SmemLayoutAtom = GMMA::Layout_K_SW128_Atom<Element>;
  using SmemLayoutXqk = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockM>, Int<kDQK>>{}));
  using SmemLayoutXv = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockM>, Int<kDV>>{}));
  using SmemLayoutYqk = decltype(tile_to_shape(
      SmemLayoutAtom{}, Shape<Int<kBlockN>, Int<kDQK>, Int<kStages>>{}));
  using SmemLayoutYv = decltype(tile_to_shape(
      SmemLayoutAtom{}, Shape<Int<kBlockN>, Int<kDV>, Int<kStages>>{}));
  // One (kBlockN x kChunk) chunk of a streamed stage, seen transposed as (kChunk, N).
  template <int kChunk>
  using SmemLayoutChunkT = decltype(composition(
      tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockN>, Int<kChunk>>{}),
      make_ordered_layout(Shape<Int<kChunk>, Int<kBlockN>>{}, Step<_2, _1>{})));

  static constexpr uint32_t kTmaBytesX = kBlockM * (kDQK + kDV) * sizeof(Element);

  // kDQ can form rden and db itself (MlstmBackwardParams::fwd_h_ptr): the forward's h of
  // its stationary rows arrives next to dh, in a buffer of its own, where that fits the
  // shared memory (mlstm_bwd_sm90_forms_normalizer_terms, which the host asks too; the
  // launch checks the fit).
  static constexpr uint32_t kTmaBytesH = kBlockM * kDV * sizeof(Element);
  static constexpr bool kFormsNormTerms =
      kKind == BwdKind::kDQ && mlstm_bwd_sm90_forms_normalizer_terms(kDQK, kDV);
  static constexpr uint32_t kTmaBytesY = kBlockN * (kDQK + kDV) * sizeof(Element);

  using MainloopPipeline = cutlass::PipelineTmaAsync<kStages>;
  using PipelineState = cutlass::PipelineState<kStages>;

  // Streamed-row scalars of one step: the exponent term, rden and db (the latter two
  // only for kDKV, whose streamed rows are the t of the gradient formulas).
  static constexpr int kNumScalars = kRowStationary ? 1 : 3;

  struct NoHBuffer {};
  struct HBuffer {
    array_aligned<Element, cosize_v<SmemLayoutXv>, 1024> smem_h;
  };
  struct SharedStorage : std::conditional_t<kFormsNormTerms, HBuffer, NoHBuffer> {
    array_aligned<Element, cosize_v<SmemLayoutXqk>, 1024> smem_xqk;
    array_aligned<Element, cosize_v<SmemLayoutXv>, 1024> smem_xv;
    array_aligned<Element, cosize_v<SmemLayoutYqk>, 1024> smem_yqk;
    array_aligned<Element, cosize_v<SmemLayoutYv>, 1024> smem_yv;
    // Per consumer warpgroup, double-buffered by step parity.
    float scalars[kNumMmaWarpGroups][2][kNumScalars][kBlockN];
    typename MainloopPipeline::SharedStorage pipeline;
    int work[2];  // work item ids, by item parity (see the kernel)
    cutlass::arch::ClusterTransactionBarrier barrier_x;  // stationary tiles loaded
    cutlass::arch::ClusterBarrier barrier_x_empty;       // ... and consumed
  };

  // TMA of a (S, D, NH, B) tensor into a (rows x D) tile.
  template <int kRows, int kD, class SmemLayout>
  static auto make_tma(const void* ptr, const MlstmBackwardParams& p, int64_t row_stride,
                       int64_t head_stride, int64_t batch_stride, SmemLayout smem_layout) {
    return make_tma_copy(SM90_TMA_LOAD{},
                         gmem_tensor<Element>(ptr, p.S, kD, p.NH, p.B, row_stride, head_stride,
                                              batch_stride),
                         smem_layout, Shape<Int<kRows>, Int<kD>>{}, _1{});
  }
  static auto tma_xqk(const void* ptr, const MlstmBackwardParams& p, int64_t rs, int64_t hs,
                      int64_t bs) {
    return make_tma<kBlockM, kDQK>(ptr, p, rs, hs, bs, SmemLayoutXqk{});
  }
  static auto tma_xv(const void* ptr, const MlstmBackwardParams& p, int64_t rs, int64_t hs,
                     int64_t bs) {
    return make_tma<kBlockM, kDV>(ptr, p, rs, hs, bs, SmemLayoutXv{});
  }
  static auto tma_yqk(const void* ptr, const MlstmBackwardParams& p, int64_t rs, int64_t hs,
                      int64_t bs) {
    return make_tma<kBlockN, kDQK>(ptr, p, rs, hs, bs, take<0, 2>(SmemLayoutYqk{}));
  }
  static auto tma_yv(const void* ptr, const MlstmBackwardParams& p, int64_t rs, int64_t hs,
                     int64_t bs) {
    return make_tma<kBlockN, kDV>(ptr, p, rs, hs, bs, take<0, 2>(SmemLayoutYv{}));
  }
  // A (2 DQK, DV) state (hi rows, then lo rows) per (batch, head), contiguous, in
  // Y_v-stage pieces. Without a state the descriptor points at the first input and is
  // never used.
  static auto tma_state(const void* ptr, const MlstmBackwardParams& p) {
    constexpr int kRows = kStateParts * kDQK;
    const int64_t state = static_cast<int64_t>(kRows) * kDV;
    return make_tma_copy(SM90_TMA_LOAD{},
                         gmem_tensor<Element>(ptr != nullptr ? ptr : p.q_ptr, kRows, kDV, p.NH,
                                              p.B, kDV, state, p.NH * state),
                         take<0, 2>(SmemLayoutYv{}), Shape<Int<kBlockN>, Int<kDV>>{}, _1{});
  }
  using TmaXqk = decltype(tma_xqk(nullptr, std::declval<const MlstmBackwardParams&>(), 0, 0, 0));
  using TmaXv = decltype(tma_xv(nullptr, std::declval<const MlstmBackwardParams&>(), 0, 0, 0));
  using TmaYqk = decltype(tma_yqk(nullptr, std::declval<const MlstmBackwardParams&>(), 0, 0, 0));
  using TmaYv = decltype(tma_yv(nullptr, std::declval<const MlstmBackwardParams&>(), 0, 0, 0));
  using TmaState = decltype(tma_state(nullptr, std::declval<const MlstmBackwardParams&>()));

  struct Params {
    MlstmBackwardParams p;
    TmaXqk tma_xqk;
    TmaXv tma_xv;
    TmaYqk tma_yqk;
    TmaYv tma_yv;
    TmaState tma_state;  // bwd_state(p, kKind): C for kDhu and kDQ, dC for the others
    TmaXv tma_h;         // the forward's h (p.fwd_h_ptr; else X_v's tensor, unused)
  };
};

}  // namespace xlstm_sm90
