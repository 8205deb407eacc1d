// Helpers of the sm_90a family (forward and backward): global tensor views for TMA,
// the WGMMA issue wrapper, views of the WGMMA accumulator layout, named barriers and
// quad reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/numeric_conversion.h>
#include <cutlass/pipeline/pipeline.hpp>

namespace xlstm_sm90 {

using namespace cute;

// Global tensors as (S, D, NH, B) with the real int64 strides (last dim contiguous).
using GmemShape = Shape<int32_t, int32_t, int32_t, int32_t>;
using GmemStride = Stride<int64_t, _1, int64_t, int64_t>;

template <typename Element>
auto gmem_tensor(const void* ptr, int64_t S, int D, int64_t NH, int64_t B, int64_t row_stride,
                 int64_t head_stride, int64_t batch_stride) {
  // TMA wants every global stride a multiple of 16 bytes. A dimension of extent 1 is
  // only ever indexed at 0, so its stride (which torch leaves arbitrary) is replaced.
  constexpr int64_t kVec = 16 / sizeof(Element);
  auto fix = [](int64_t extent, int64_t stride) { return extent == 1 ? kVec : stride; };
  return make_tensor(make_gmem_ptr(static_cast<const Element*>(ptr)),
                     make_layout(GmemShape(static_cast<int32_t>(S), D, static_cast<int32_t>(NH),
                                           static_cast<int32_t>(B)),
                                 GmemStride(fix(S, row_stride), _1{}, fix(NH, head_stride),
                                            fix(B, batch_stride))));
}

// The TMA pipeline of a warp-specialized CTA: warpgroup 0 produces (thread 0 leads),
// the other warpgroups consume; a stage is full once its `tx_bytes` and `num_producers`
// arrivals (thread 0's expect-tx is one) are in. Initializes the stage barriers
// (warp 0) and fences the inits; the caller syncs the CTA before use.
template <class Pipeline>
CUTLASS_DEVICE Pipeline make_tma_pipeline(typename Pipeline::SharedStorage& storage,
                                          uint32_t tx_bytes, int num_consumers,
                                          int num_producers = 1) {
  typename Pipeline::Params params;
  params.num_producers = num_producers;
  params.transaction_bytes = tx_bytes;
  params.role = cutlass::canonical_warp_group_idx() == 0 ? Pipeline::ThreadCategory::Producer
                                                         : Pipeline::ThreadCategory::Consumer;
  params.is_leader = threadIdx.x == 0;
  params.num_consumers = num_consumers;
  return Pipeline(storage, params, Shape<_1, _1, _1>{});
}

// Issues tCrC (+)= tCrA * tCrB over the K mode as one WGMMA batch and commits it;
// the caller waits with warpgroup_wait<N>() and then fences tCrC again.
template <bool kZeroInit, class TiledMma, class TensorA, class TensorB, class TensorC>
CUTLASS_DEVICE void wgmma_issue(TiledMma& tiled_mma, TensorA const& tCrA, TensorB const& tCrB,
                                TensorC& tCrC) {
  constexpr bool kIsRS = !is_base_of<GMMA::DescriptorIterator, typename TiledMma::FrgTypeA>::value;
  if constexpr (kIsRS) warpgroup_fence_operand(const_cast<TensorA&>(tCrA));
  warpgroup_fence_operand(tCrC);
  warpgroup_arrive();
  if constexpr (kZeroInit) tiled_mma.accumulate_ = GMMA::ScaleOut::Zero;
  CUTLASS_PRAGMA_UNROLL
  for (int k_block = 0; k_block < size<2>(tCrA); ++k_block) {
    cute::gemm(tiled_mma, tCrA(_, _, k_block), tCrB(_, _, k_block), tCrC);
    tiled_mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  warpgroup_fence_operand(tCrC);
  if constexpr (kIsRS) warpgroup_fence_operand(const_cast<TensorA&>(tCrA));
}

// WGMMA accumulator ((2, 2, N/8), MMA_M, MMA_N) -> (rows (2, MMA_M), cols (2, N/8, MMA_N)):
// value mode 0 steps one column, mode 1 eight rows, mode 2 eight columns.
template <class Layout>
CUTLASS_HOST_DEVICE constexpr auto acc_layout_rowcol(Layout acc) {
  static_assert(decltype(rank(acc))::value == 3 && decltype(rank<0>(acc))::value == 3);
  return make_layout(make_layout(get<0, 1>(acc), get<1>(acc)),
                     make_layout(get<0, 0>(acc), get<0, 2>(acc), get<2>(acc)));
}

// The fp32 accumulator of S (64 x N per warpgroup) holds, per thread, exactly the
// values the 16-bit A operand of a 64 x DV x 16 RS WGMMA needs: two adjacent
// 8-column blocks form one k16 slice.
// ((2, 2, N/8), MMA_M, MMA_N) -> ((2, 2, 2), MMA_M, (N/16, MMA_N)).
template <class Layout>
CUTLASS_HOST_DEVICE constexpr auto acc_layout_as_a_operand(Layout acc) {
  auto l = logical_divide(get<0, 2>(acc), Tile<_2>{});  // (2, N/16)
  return make_layout(make_layout(get<0, 0>(acc), get<0, 1>(acc), get<0, 0>(l)), get<1>(acc),
                     coalesce(make_layout(get<0, 1>(l), get<2>(acc))));
}

// Converts a register tensor (contiguous storage) elementwise into a new register
// tensor of type To with layout `layout` over the same storage order.
template <typename To, class Engine, class LayoutIn, class LayoutOut>
CUTLASS_DEVICE auto convert_regs(Tensor<Engine, LayoutIn> const& src, LayoutOut layout) {
  using From = typename Engine::value_type;
  constexpr int kN = decltype(size(src))::value;
  static_assert(decltype(cosize(layout))::value == kN);
  Tensor dst = make_tensor<To>(layout);
  cutlass::NumericArrayConverter<To, From, kN> convert;
  *reinterpret_cast<cutlass::Array<To, kN>*>(dst.data()) =
      convert(*reinterpret_cast<const cutlass::Array<From, kN>*>(src.data()));
  return dst;
}

// Two floats rounded to the 16-bit Element, packed for one 32-bit store.
template <typename Element>
CUTLASS_DEVICE uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<Element, cutlass::bfloat16_t>) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}

// bar.sync on a named barrier; id 0 is __syncthreads.
CUTLASS_DEVICE void named_barrier_sync(uint32_t id, uint32_t num_threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(num_threads) : "memory");
}

CUTLASS_DEVICE void named_barrier_arrive(uint32_t id, uint32_t num_threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(num_threads) : "memory");
}

// The four threads of a quad hold the same two accumulator rows.
CUTLASS_DEVICE float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffff, x, 1);
  return x + __shfl_xor_sync(0xffffffff, x, 2);
}

// One butterfly step of quad_transpose: the lane whose bit kMask is set swaps its
// `lo` word for its partner's `hi` word.
template <int kMask>
CUTLASS_DEVICE void quad_exchange(uint32_t& lo, uint32_t& hi, bool upper) {
  const uint32_t recv = __shfl_xor_sync(0xffffffff, upper ? lo : hi, kMask);
  if (upper) lo = recv;
  else hi = recv;
}

// 4 x 4 transpose of 32-bit words across the four lanes of a quad (lane % 4 = q):
// afterwards word p of lane q is what word q of lane p was. All 32 lanes must call it.
CUTLASS_DEVICE void quad_transpose(uint32_t (&w)[4], int q) {
  quad_exchange<2>(w[0], w[2], q & 2);
  quad_exchange<2>(w[1], w[3], q & 2);
  quad_exchange<1>(w[0], w[1], q & 1);
  quad_exchange<1>(w[2], w[3], q & 1);
}

}  // namespace xlstm_sm90
