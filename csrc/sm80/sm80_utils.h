// Register-level helpers shared by the sm_80 mLSTM kernels (forward and backward):
// fast exp2, views of mma.sync m16n8 accumulators, ldmatrix-fed GEMM loops and the
// guarded global -> shared row copy.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

namespace xlstm_sm80 {

using namespace cute;

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Accumulator ((2,2), MMA_M, MMA_N) viewed as (rows=(2,MMA_M), cols=(2,MMA_N)).
template <class Layout>
CUTE_HOST_DEVICE constexpr auto acc_rowcol_layout(Layout const& l) {
  static_assert(decltype(rank(l))::value == 3);
  return make_layout(make_layout(get<0, 1>(l), get<1>(l)), make_layout(get<0, 0>(l), get<2>(l)));
}

// Accumulator of m16n8 tiles viewed as the A operand of m16n8k16: two adjacent n8
// tiles form one k16 slice.
template <class Layout>
CUTE_HOST_DEVICE constexpr auto acc_to_A_layout(Layout const& acc_layout) {
  auto l = logical_divide(acc_layout, Shape<X, X, _2>{});
  return make_layout(make_layout(get<0>(l), get<2, 0>(l)), get<1>(l), get<2, 1>(l));
}

// acc += A * B with both operands read from smem by ldmatrix, one k slice ahead.
template <class Acc, class TA, class TB, class TsA, class TsB, class Mma, class CopyA,
          class CopyB, class ThrCopyA, class ThrCopyB>
__device__ __forceinline__ void gemm_ss(Acc& acc, TA& tCrA, TB& tCrB, TsA const& tCsA,
                                        TsB const& tCsB, Mma const& mma, CopyA const& copy_a,
                                        CopyB const& copy_b, ThrCopyA const& thr_a,
                                        ThrCopyB const& thr_b) {
  Tensor tCrA_v = thr_a.retile_D(tCrA);
  Tensor tCrB_v = thr_b.retile_D(tCrB);
  copy(copy_a, tCsA(_, _, 0), tCrA_v(_, _, 0));
  copy(copy_b, tCsB(_, _, 0), tCrB_v(_, _, 0));
  CUTE_UNROLL
  for (int k = 0; k < size<2>(tCrA); ++k) {
    if (k + 1 < size<2>(tCrA)) {
      copy(copy_a, tCsA(_, _, k + 1), tCrA_v(_, _, k + 1));
      copy(copy_b, tCsB(_, _, k + 1), tCrB_v(_, _, k + 1));
    }
    gemm(mma, tCrA(_, _, k), tCrB(_, _, k), acc);
  }
}

// acc += A * B with A already in registers and B read from smem by ldmatrix.
template <class Acc, class TA, class TB, class TsB, class Mma, class CopyB, class ThrCopyB>
__device__ __forceinline__ void gemm_rs(Acc& acc, TA const& tCrA, TB& tCrB, TsB const& tCsB,
                                        Mma const& mma, CopyB const& copy_b,
                                        ThrCopyB const& thr_b) {
  Tensor tCrB_v = thr_b.retile_D(tCrB);
  copy(copy_b, tCsB(_, _, 0), tCrB_v(_, _, 0));
  CUTE_UNROLL
  for (int k = 0; k < size<2>(tCrA); ++k) {
    if (k + 1 < size<2>(tCrA)) copy(copy_b, tCsB(_, _, k + 1), tCrB_v(_, _, k + 1));
    gemm(mma, tCrA(_, _, k), tCrB(_, _, k), acc);
  }
}

// Global -> shared tile copy of whole rows; rows at or past max_rows are zero-filled
// (a zero K/V row gives an exact 0 contribution, garbage could be NaN).
template <class TiledCopy, class TS, class TD, class TC>
__device__ __forceinline__ void copy_rows_guarded(TiledCopy const& tiled_copy, TS const& S,
                                                  TD& D, TC const& C, int64_t max_rows) {
  CUTE_UNROLL
  for (int m = 0; m < size<1>(S); ++m) {
    if (get<0>(C(0, m, 0)) < max_rows) {
      CUTE_UNROLL
      for (int k = 0; k < size<2>(S); ++k) copy(tiled_copy, S(_, m, k), D(_, m, k));
    } else {
      CUTE_UNROLL
      for (int k = 0; k < size<2>(S); ++k) clear(D(_, m, k));
    }
  }
}

}  // namespace xlstm_sm80
