// Tile shapes, MMA atoms, copy atoms and shared-memory layouts of the sm_80 mLSTM
// backward (docs/semantics.md, "Gradients"). One kernel template, five kinds:
//
//   kDQ  row-stationary:    keeps q_t, dh_t of kBlockM rows; streams k_j, v_j;
//                           dq slice += dS K, row sums of dS * s.
//   kDK  column-stationary: keeps k_j, v_j of kBlockM columns; streams q_t, dh_t;
//                           dk slice += dS^T Q, column sums of dS * s (dI).
//   kDV  column-stationary: keeps k_j; streams q_t and one DV slice of dh_t;
//                           dv slice += (w * s * rden)^T dH.
//   kDKV column-stationary: kDK and kDV fused (one score tile feeds dK chunk s and dV
//                           chunk s).
//   kDhu row-stationary:    keeps q_t, dh_t; streams k_j, v_j; row sums of
//                           w * s * (dh . v) = dh_t . u_t (no output GEMM). Runs first:
//                           the normalizer's gradient db_t needs dh_t . h_t, and
//                           the rounded h of the forward would cost a half ulp of h
//                           times |dh| in every db_t. Also the row sums of w * s
//                           (b_t, recomputed with this pass's weights).
//
// Every kind computes its score tile with the stationary side as the MMA's M
// dimension, so the tile that feeds the output GEMM (dS, dS^T or P^T) is already in
// the A-operand register layout: no shared-memory round trip, no atomics, and every
// output element is written by exactly one CTA (bitwise reproducible).
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/atom/copy_atom.hpp>
#include <cutlass/numeric_types.h>

namespace xlstm_sm80 {

using namespace cute;

enum class BwdKind : int { kDQ = 0, kDK = 1, kDV = 2, kDhu = 3, kDKV = 4 };

// Head dims are processed in chunks of kChunkQK (q, k) and kChunkV (v, dh) columns:
// 64 when the head dim is 64, else 128 (DQK, DV any multiple of 128 beyond that).
// Each chunk is a separate swizzled (rows x chunk) block in shared memory; the number
// of chunks is a runtime value.
// kSm75: the same kernel for Turing (the sm75 family's backward): mma.sync m16n8k8
// (fp16 only), ldmatrix .x2, and synchronous 16-byte global loads instead of cp.async.
template <class Element_, int kChunkQK_, int kChunkV_, BwdKind kKind_, int kBlockM_ = 64,
          int kBlockN_ = 64, bool kSm75_ = false>
struct MlstmBwdKernelTraits {
  using Element = Element_;  // cutlass::half_t or cutlass::bfloat16_t
  static constexpr bool kIsBf16 = std::is_same_v<Element, cutlass::bfloat16_t>;
  static constexpr bool kSm75 = kSm75_;
  static_assert(!kSm75 || std::is_same_v<Element, cutlass::half_t>, "Turing has no bf16 MMA");
  static constexpr BwdKind kKind = kKind_;
  static constexpr bool kRowStationary = kKind == BwdKind::kDQ || kKind == BwdKind::kDhu;
  static constexpr bool kHasOutputGemm = kKind != BwdKind::kDhu;
  // kDKV: kDK and kDV in one pass (dK chunk s and dV chunk s from one score tile).
  static constexpr bool kFusedDV = kKind == BwdKind::kDKV;
  // All but kDV need dh . v (the dP tile); kDV only needs the scores.
  static constexpr bool kNeedsDP = kKind != BwdKind::kDV;

  static constexpr int kChunkQK = kChunkQK_;
  static constexpr int kChunkV = kChunkV_;
  static constexpr int kOutChunk = kKind == BwdKind::kDV ? kChunkV : kChunkQK;
  static_assert(kChunkQK == 64 || kChunkQK == 128);
  static_assert(kChunkV == 64 || kChunkV == 128);

  static constexpr int kBlockM = kBlockM_;  // stationary rows per CTA
  static constexpr int kBlockN = kBlockN_;  // streamed rows per step
  static constexpr int kNWarps = 4;         // stacked along M
  static constexpr int kNThreads = kNWarps * 32;
  static_assert(kBlockM % (16 * kNWarps) == 0 && kBlockN % 32 == 0 && kBlockM % kBlockN == 0);

  using MmaAtomArch = std::conditional_t<
      kSm75, SM75_16x8x8_F32F16F16F32_TN,
      std::conditional_t<kIsBf16, SM80_16x8x16_F32BF16BF16F32_TN, SM80_16x8x16_F32F16F16F32_TN>>;
  // K of one MMA step: 16 (sm_80 atom) or 8 (sm_75 atom). With k8 an m16n8 accumulator
  // tile already is the A operand of the next MMA; with k16 two of them form one.
  static constexpr int kMmaK = kSm75 ? 8 : 16;
  using TiledMma = TiledMMA<MMA_Atom<MmaAtomArch>, Layout<Shape<Int<kNWarps>, _1, _1>>,
                            Tile<Int<16 * kNWarps>, _16, Int<kMmaK>>>;

  // 64-column (128-byte) rows with the 3-3-3 swizzle, as in the forward.
  using SmemLayoutAtom = decltype(composition(
      Swizzle<3, 3, 3>{}, Layout<Shape<_8, _64>, Stride<_64, _1>>{}));
  template <int kRows, int kCols>
  using SmemLayout = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kRows>, Int<kCols>>{}));
  using SmemLayoutXqk = SmemLayout<kBlockM, kChunkQK>;
  using SmemLayoutXv = SmemLayout<kBlockM, kChunkV>;
  using SmemLayoutYqk = SmemLayout<kBlockN, kChunkQK>;
  using SmemLayoutYv = SmemLayout<kBlockN, kChunkV>;
  using SmemLayoutYout = SmemLayout<kBlockN, kOutChunk>;
  // The streamed chunk viewed as (chunk, kBlockN): the B operand of the output GEMM,
  // read with ldmatrix.trans.
  using SmemLayoutYoutT = decltype(composition(
      SmemLayoutYout{}, make_layout(Shape<Int<kOutChunk>, Int<kBlockN>>{}, GenRowMajor{})));
  using SmemLayoutYvT = decltype(composition(
      SmemLayoutYv{}, make_layout(Shape<Int<kChunkV>, Int<kBlockN>>{}, GenRowMajor{})));

  using SmemCopyAtom =
      Copy_Atom<std::conditional_t<kSm75, SM75_U32x2_LDSM_N, SM75_U32x4_LDSM_N>, Element>;
  using SmemCopyAtomT =
      Copy_Atom<std::conditional_t<kSm75, SM75_U16x4_LDSM_T, SM75_U16x8_LDSM_T>, Element>;

  // Global -> shared: 16-byte cp.async vectors (plain 16-byte loads on sm_75), 8 threads
  // per 64-element row.
  static constexpr int kGmemElemsPerLoad = 16 / int(sizeof(Element));
  static constexpr int kGmemThreadsPerRow = 64 / kGmemElemsPerLoad;
  using GmemLayoutAtom = Layout<Shape<Int<kNThreads / kGmemThreadsPerRow>, Int<kGmemThreadsPerRow>>,
                                Stride<Int<kGmemThreadsPerRow>, _1>>;
  using GmemCopyOp = std::conditional_t<kSm75, UniversalCopy<cute::uint128_t>,
                                        SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>>;
  using GmemTiledCopy = decltype(make_tiled_copy(Copy_Atom<GmemCopyOp, Element>{}, GmemLayoutAtom{},
                                                 Layout<Shape<_1, Int<kGmemElemsPerLoad>>>{}));

  // Per-streamed-row scalars (exponent term, rden, db), double-buffered by step parity.
  static constexpr int kScalarFloats = 2 * 3 * kBlockN;

  // Shared memory for head dims (DQK, DV): stationary q/k (+ v/dh), streamed
  // k/q (+ all of v/dh, or one dh slice for kDV), then the scalars.
  static constexpr int64_t smem_bytes(int DQK, int DV) {
    const int64_t x = int64_t(kBlockM) * (DQK + (kNeedsDP ? DV : 0));
    const int64_t y = int64_t(kBlockN) * (DQK + (kNeedsDP ? DV : kChunkV));
    return (x + y) * int64_t(sizeof(Element)) + kScalarFloats * 4;
  }
};

}  // namespace xlstm_sm80
