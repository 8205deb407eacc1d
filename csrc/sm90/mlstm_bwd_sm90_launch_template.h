// Host side of the sm_90a backward: TMA descriptors from the real strides, one launch
// per kernel kind. Included only by the instantiation files.
#pragma once

#include <algorithm>
#include <climits>

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include "../cuda_device_info.h"
#include "mlstm_bwd_sm90_api.h"
#include "mlstm_bwd_sm90_kernel.h"

namespace xlstm_sm90 {

// A (B, NH, S, D) input: pointer and strides.
struct BwdInput {
  const void* ptr;
  int64_t row_stride, head_stride, batch_stride;
};

template <class Element, int kDQK, int kDV, BwdKind kKind>
void launch_mlstm_bwd_sm90_kind(const MlstmBackwardParams& p, cudaStream_t stream) {
  using Traits = BwdTraits<Element, kDQK, kDV, kKind>;
  TORCH_CHECK(p.dq_add.x == nullptr && p.dk_add.x == nullptr && p.dv_add.x == nullptr &&
                  (p.c_lowp == nullptr || p.q_dh_c_ptr != nullptr),
              "mlstm sm90 backward: internal error: state terms come as c_lowp / dc_lowp, "
              "with an output for q . dh C^T");
  TORCH_CHECK(p.fwd_h_ptr == nullptr ||
                  (p.norm_rows_ptr != nullptr && p.row_pass_flags != nullptr &&
                   p.dhu_ptr != nullptr && p.bsum_ptr != nullptr && p.rden_ptr != nullptr &&
                   p.db_ptr != nullptr),
              "mlstm sm90 backward: internal error: the normalizer terms from the forward's h "
              "need its rows, the row pass's flags and outputs, and rden / db buffers");
  const BwdInput q{p.q_ptr, p.q_row_stride, p.q_head_stride, p.q_batch_stride};
  const BwdInput k{p.k_ptr, p.k_row_stride, p.k_head_stride, p.k_batch_stride};
  const BwdInput v{p.v_ptr, p.v_row_stride, p.v_head_stride, p.v_batch_stride};
  const BwdInput dh{p.dh_ptr, p.dh_row_stride, p.dh_head_stride, p.dh_batch_stride};
  // Stationary (x) and streamed (y) sides: (q, dh) and (k, v), swapped for kDKV.
  const BwdInput& xqk = Traits::kRowStationary ? q : k;
  const BwdInput& xv = Traits::kRowStationary ? dh : v;
  const BwdInput& yqk = Traits::kRowStationary ? k : q;
  const BwdInput& yv = Traits::kRowStationary ? v : dh;
  typename Traits::Params params{
      p,
      Traits::tma_xqk(xqk.ptr, p, xqk.row_stride, xqk.head_stride, xqk.batch_stride),
      Traits::tma_xv(xv.ptr, p, xv.row_stride, xv.head_stride, xv.batch_stride),
      Traits::tma_yqk(yqk.ptr, p, yqk.row_stride, yqk.head_stride, yqk.batch_stride),
      Traits::tma_yv(yv.ptr, p, yv.row_stride, yv.head_stride, yv.batch_stride),
      Traits::tma_state(bwd_state(p, kKind).lowp, p),
      p.fwd_h_ptr != nullptr
          ? Traits::tma_xv(p.fwd_h_ptr, p, p.fwd_h_row_stride, p.fwd_h_head_stride,
                           p.fwd_h_batch_stride)
          : Traits::tma_xv(xv.ptr, p, xv.row_stride, xv.head_stride, xv.batch_stride)};
  constexpr size_t kSmem = sizeof(typename Traits::SharedStorage);
  static_assert(kSmem <= 227 * 1024, "shared memory of the sm90 backward tile exceeds 227 KB");
  auto kernel = mlstm_bwd_sm90_kernel<Traits>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(kSmem)));
  // Persistent: at most one CTA per SM (a CTA fills an SM's shared memory anyway).
  static_assert(Traits::kNumOutSlices > 0);
  const int64_t num_work = bwd_num_work<Traits>(p);
  if (num_work == 0) return;
  TORCH_CHECK(p.work_counters != nullptr, "mlstm sm90 backward: no work counters given");
  TORCH_CHECK(num_work < INT_MAX, "mlstm sm90 backward: B*NH*S*D is too large for one launch (",
              num_work, " work items)");
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const int64_t num_ctas = std::min<int64_t>(num_work, xlstm::cuda_multiprocessor_count(device));
  kernel<<<dim3(static_cast<unsigned>(num_ctas)), Traits::kNumThreads, kSmem, stream>>>(params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class Element, int kDQK, int kDV>
void run_mlstm_bwd_sm90_dims(const MlstmBackwardParams& p, BackwardPass pass,
                             cudaStream_t stream) {
  if (pass == BackwardPass::kRowDotProducts) {
    launch_mlstm_bwd_sm90_kind<Element, kDQK, kDV, BwdKind::kDhu>(p, stream);
    return;
  }
  // kDQ first: with p.fwd_h_ptr it writes the rden and db that the others read.
  launch_mlstm_bwd_sm90_kind<Element, kDQK, kDV, BwdKind::kDQ>(p, stream);
  launch_mlstm_bwd_sm90_kind<Element, kDQK, kDV, BwdKind::kDKV>(p, stream);
  // The chunks of the wider head dim that have no partner chunk in the other.
  if constexpr (kDQK > kDV && kDQK > 128) launch_mlstm_bwd_sm90_kind<Element, kDQK, kDV, BwdKind::kDK>(p, stream);
  if constexpr (kDV > kDQK && kDV > 128) launch_mlstm_bwd_sm90_kind<Element, kDQK, kDV, BwdKind::kDV>(p, stream);
}

template <bool kIsBf16, int kDQK>
void run_mlstm_bwd_sm90_(const MlstmBackwardParams& p, BackwardPass pass, cudaStream_t stream) {
  using Element = std::conditional_t<kIsBf16, cutlass::bfloat16_t, cutlass::half_t>;
  switch (p.DV) {
    case 64: run_mlstm_bwd_sm90_dims<Element, kDQK, 64>(p, pass, stream); break;
    case 128: run_mlstm_bwd_sm90_dims<Element, kDQK, 128>(p, pass, stream); break;
    case 256:
      if constexpr (mlstm_bwd_sm90_supports(kDQK, 256)) {
        run_mlstm_bwd_sm90_dims<Element, kDQK, 256>(p, pass, stream);
        break;
      }
      [[fallthrough]];
    default:
      TORCH_CHECK(false, "mlstm sm90 backward: unsupported head dims DQK=", p.DQK, ", DV=", p.DV);
  }
}

}  // namespace xlstm_sm90
