// Tile shapes, MMA atoms, copy atoms and shared-memory layouts of the sm_80 mLSTM
// parallel forward (FlashAttention-2 style: cp.async into swizzled smem, ldmatrix,
// mma.sync m16n8k16 with fp32 accumulation).
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cute/atom/copy_atom.hpp>
#include <cutlass/numeric_types.h>

namespace xlstm_sm80 {

using namespace cute;

template <int kHeadDimQK_, int kHeadDimV_, int kBlockM_, int kBlockN_, int kNWarps_,
          typename Element_>
struct MlstmFwdKernelTraits {
  using Element = Element_;  // cutlass::half_t or cutlass::bfloat16_t
  using ElementAccum = float;
  static constexpr bool kIsBf16 = std::is_same_v<Element, cutlass::bfloat16_t>;

  static constexpr int kHeadDimQK = kHeadDimQK_;
  static constexpr int kHeadDimV = kHeadDimV_;  // DV columns handled by one CTA
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = kNWarps * 32;
  // Warps are stacked along M, 16 rows each: every thread owns whole rows' quads, so
  // the row max / row sum need only quad shuffles.
  static_assert(kBlockM % (16 * kNWarps) == 0);
  static_assert(kHeadDimQK % 64 == 0 && kHeadDimV % 64 == 0 && kBlockN % 16 == 0);

  using MmaAtomArch = std::conditional_t<kIsBf16, SM80_16x8x16_F32BF16BF16F32_TN,
                                         SM80_16x8x16_F32F16F16F32_TN>;
  // N permuted to 16 so that one ldmatrix.x4 feeds two n8 atoms.
  using TiledMma = TiledMMA<MMA_Atom<MmaAtomArch>, Layout<Shape<Int<kNWarps>, _1, _1>>,
                            Tile<Int<16 * kNWarps>, _16, _16>>;
  // The initial-state term q C0 runs on bf16 hi/mid/lo splits of the fp32 C0 (and a
  // hi/lo split of fp16 q), which keeps it at fp32 accuracy. Same fragment layouts.
  using TiledMmaState =
      TiledMMA<MMA_Atom<SM80_16x8x16_F32BF16BF16F32_TN>, Layout<Shape<Int<kNWarps>, _1, _1>>,
               Tile<Int<16 * kNWarps>, _16, _16>>;

  // 64-column (128-byte) rows with the 3-3-3 swizzle: conflict-free cp.async writes
  // and ldmatrix reads.
  static constexpr int kBlockKSmem = 64;
  using SmemLayoutAtom = decltype(composition(
      Swizzle<3, 3, 3>{},
      Layout<Shape<_8, Int<kBlockKSmem>>, Stride<Int<kBlockKSmem>, _1>>{}));
  using SmemLayoutQ = decltype(tile_to_shape(SmemLayoutAtom{},
                                             Shape<Int<kBlockM>, Int<kHeadDimQK>>{}));
  using SmemLayoutK = decltype(tile_to_shape(SmemLayoutAtom{},
                                             Shape<Int<kBlockN>, Int<kHeadDimQK>>{}));
  using SmemLayoutV = decltype(tile_to_shape(SmemLayoutAtom{},
                                             Shape<Int<kBlockN>, Int<kHeadDimV>>{}));
  // V viewed as (DV, BN): the B operand of P V, read with ldmatrix.trans.
  using SmemLayoutVt = decltype(composition(
      SmemLayoutV{}, make_layout(Shape<Int<kHeadDimV>, Int<kBlockN>>{}, GenRowMajor{})));
  using SmemLayoutO = decltype(tile_to_shape(SmemLayoutAtom{},
                                             Shape<Int<kBlockM>, Int<kHeadDimV>>{}));

  using SmemCopyAtom = Copy_Atom<SM75_U32x4_LDSM_N, Element>;
  using SmemCopyAtomT = Copy_Atom<SM75_U16x8_LDSM_T, Element>;
  using SmemCopyAtomStateT = Copy_Atom<SM75_U16x8_LDSM_T, cutlass::bfloat16_t>;
  using SmemCopyAtomO = Copy_Atom<UniversalCopy<uint32_t>, Element>;

  static constexpr int kSmemQElems = kBlockM * kHeadDimQK;
  static constexpr int kSmemKElems = kBlockN * kHeadDimQK;
  static constexpr int kSmemVElems = kBlockN * kHeadDimV;
  static constexpr int kSmemQKVElems = kSmemQElems + kSmemKElems + kSmemVElems;
  // The O tile is staged through the (by then idle) Q/K/V region.
  static constexpr int kSmemElems =
      kSmemQKVElems > kBlockM * kHeadDimV ? kSmemQKVElems : kBlockM * kHeadDimV;
  // Per-column decay terms of the current K tile (natural and log2 units), the max per
  // 32-column group, the rank-one column factors, and q̂ n0 per row.
  static constexpr int kSmemFloats = 3 * kBlockN + 4 + kBlockM;
  static constexpr int kSmemSize = kSmemElems * int(sizeof(Element)) + kSmemFloats * 4;

  // Global <-> shared: 16-byte vectors, 8 threads per 64-element row.
  static constexpr int kGmemElemsPerLoad = 16 / int(sizeof(Element));
  static constexpr int kGmemThreadsPerRow = kBlockKSmem / kGmemElemsPerLoad;
  static_assert(kNThreads % kGmemThreadsPerRow == 0);
  using GmemLayoutAtom = Layout<Shape<Int<kNThreads / kGmemThreadsPerRow>, Int<kGmemThreadsPerRow>>,
                                Stride<Int<kGmemThreadsPerRow>, _1>>;
  using GmemTiledCopyQKV = decltype(make_tiled_copy(
      Copy_Atom<SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>, Element>{}, GmemLayoutAtom{},
      Layout<Shape<_1, Int<kGmemElemsPerLoad>>>{}));
  using GmemTiledCopyO = decltype(make_tiled_copy(
      Copy_Atom<UniversalCopy<cute::uint128_t>, Element>{}, GmemLayoutAtom{},
      Layout<Shape<_1, Int<kGmemElemsPerLoad>>>{}));
};

}  // namespace xlstm_sm80
