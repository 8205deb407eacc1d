// sm_80 mLSTM parallel forward: one CTA per (row tile of kBlockM, DV slice of
// kHeadDimV, batch*head). Walks the causal column tiles from the diagonal back to 0
// with an online stabilizer, like FlashAttention-2's forward:
//
//   prologue  Q tile and the first K tile go out on cp.async; the running max starts
//             at the initial-state column F_t + m_0; q̂ C0 and q̂ n0 seed the
//             accumulators (fp32-accurate, see below).
//   per tile  wait K -> issue V -> S = Q K^T -> wait V -> issue next K ->
//             decay, online rescale, P = exp(logD - m) * S -> O += P V.
//   epilogue  O / (max(|b|, exp(-m)) + eps) -> smem -> 16-byte global stores;
//             m_t and b_t per row.
//
// logD_tj = F_t - F_j + i_j is formed as frow_t + ct_j with frow_t = F_t - F_ref and
// ct_j = i_j - (F_j - F_ref), both differences taken in fp64 (F_ref = F at the first
// row of the tile), so the large cancellation of long sequences never happens in fp32.
#pragma once

#include <cmath>
#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "../mlstm_params.h"
#include "mlstm_fwd_kernel_traits.h"
#include "sm80_utils.h"

namespace xlstm_sm80 {

using namespace cute;

template <class Traits, bool Has_C0>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    mlstm_fwd_sm80_kernel(const __grid_constant__ MlstmForwardParams params) {
// cp.async and bf16 MMA need sm_80: on older archs of the build the body is empty
// (the dispatcher never launches this family there).
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using Element = typename Traits::Element;
  using bf16 = cutlass::bfloat16_t;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDimQK = Traits::kHeadDimQK;
  constexpr int kHeadDimV = Traits::kHeadDimV;
  constexpr int kNThreads = Traits::kNThreads;
  static_assert(kBlockN == 32 || kBlockN == 64);  // one or two 32-column gate groups

  extern __shared__ __align__(128) char smem_[];

  const int64_t S = params.S;
  const int num_dv_blocks = params.DV / kHeadDimV;
  const int64_t num_m_blocks = (S + kBlockM - 1) / kBlockM;
  // Fastest: DV slice, then row tile (heaviest causal tiles first), then batch*head,
  // so the CTAs in flight share a few heads' K/V in L2.
  int64_t bid = blockIdx.x;
  const int dv_block = int(bid % num_dv_blocks);
  bid /= num_dv_blocks;
  const int64_t m_block = num_m_blocks - 1 - bid % num_m_blocks;
  const int64_t bh = bid / num_m_blocks;
  const int64_t b = bh / params.NH, h = bh % params.NH;
  const int tidx = threadIdx.x;
  const int64_t row0 = m_block * kBlockM;

  const Element* q_base = reinterpret_cast<const Element*>(params.q_ptr) +
                          b * params.q_batch_stride + h * params.q_head_stride;
  const Element* k_base = reinterpret_cast<const Element*>(params.k_ptr) +
                          b * params.k_batch_stride + h * params.k_head_stride;
  const Element* v_base = reinterpret_cast<const Element*>(params.v_ptr) +
                          b * params.v_batch_stride + h * params.v_head_stride +
                          int64_t(dv_block) * kHeadDimV;
  Element* h_base = reinterpret_cast<Element*>(params.h_ptr) + b * params.h_batch_stride +
                    h * params.h_head_stride + int64_t(dv_block) * kHeadDimV;
  const float* ig = params.igate_ptr + bh * S;
  const double* fc = params.fcum_ptr + bh * S;

  auto k_tile = [&](int n) {
    return make_tensor(make_gmem_ptr(k_base + int64_t(n) * kBlockN * params.k_row_stride),
                       Shape<Int<kBlockN>, Int<kHeadDimQK>>{},
                       make_stride(params.k_row_stride, _1{}));
  };
  auto v_tile = [&](int n) {
    return make_tensor(make_gmem_ptr(v_base + int64_t(n) * kBlockN * params.v_row_stride),
                       Shape<Int<kBlockN>, Int<kHeadDimV>>{},
                       make_stride(params.v_row_stride, _1{}));
  };
  Tensor gQ = make_tensor(make_gmem_ptr(q_base + row0 * params.q_row_stride),
                          Shape<Int<kBlockM>, Int<kHeadDimQK>>{},
                          make_stride(params.q_row_stride, _1{}));

  Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem_)),
                          typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(sQ.data() + size(sQ), typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(sK.data() + size(sK), typename Traits::SmemLayoutV{});
  Tensor sVt = make_tensor(sV.data(), typename Traits::SmemLayoutVt{});
  float* s_ct = reinterpret_cast<float*>(smem_ + Traits::kSmemElems * sizeof(Element));
  float* s_ct2 = s_ct + kBlockN;
  float* s_ctmax = s_ct2 + kBlockN;
  float* s_e = s_ctmax + 4;
  float* s_qn0 = s_e + kBlockN;

  typename Traits::GmemTiledCopyQKV gmem_tiled_copy;
  auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(tidx);
  Tensor tQgQ = gmem_thr_copy.partition_S(gQ);
  Tensor tQsQ = gmem_thr_copy.partition_D(sQ);
  Tensor tKsK = gmem_thr_copy.partition_D(sK);
  Tensor tVsV = gmem_thr_copy.partition_D(sV);
  Tensor tQcQ = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDimQK>>{}));
  Tensor tKcK = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDimQK>>{}));
  Tensor tVcV = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDimV>>{}));

  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(tidx);
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);
  Tensor tSrK = thr_mma.partition_fragment_B(sK);
  Tensor tOrVt = thr_mma.partition_fragment_B(sVt);

  auto smem_tiled_copy_Q = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
  auto smem_thr_copy_Q = smem_tiled_copy_Q.get_thread_slice(tidx);
  Tensor tSsQ = smem_thr_copy_Q.partition_S(sQ);
  auto smem_tiled_copy_K = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, tiled_mma);
  auto smem_thr_copy_K = smem_tiled_copy_K.get_thread_slice(tidx);
  Tensor tSsK = smem_thr_copy_K.partition_S(sK);
  auto smem_tiled_copy_V = make_tiled_copy_B(typename Traits::SmemCopyAtomT{}, tiled_mma);
  auto smem_thr_copy_V = smem_tiled_copy_V.get_thread_slice(tidx);
  Tensor tOsVt = smem_thr_copy_V.partition_S(sVt);

  // ---- prologue: Q and the diagonal K tile on cp.async --------------------------
  const int n_block_max = int(min(S - 1, row0 + kBlockM - 1) / kBlockN);
  copy_rows_guarded(gmem_tiled_copy, tQgQ, tQsQ, tQcQ, S - row0);
  cp_async_fence();
  {
    Tensor tKgK = gmem_thr_copy.partition_S(k_tile(n_block_max));
    copy_rows_guarded(gmem_tiled_copy, tKgK, tKsK, tKcK, S - int64_t(n_block_max) * kBlockN);
  }
  cp_async_fence();

  // Rows owned by this thread (2 per 16-row MMA tile), as (row, col) coordinates of
  // the score tile.
  Tensor tScS = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), acc_rowcol_layout(tScS.layout()));
  constexpr int kRows = decltype(size<0>(tScS_rc))::value;
  constexpr int kCols = decltype(size<1>(tScS_rc))::value;

  const double f_ref = fc[row0];
  const float m0 = params.m0_ptr != nullptr ? params.m0_ptr[bh] : 0.f;
  const float ct0 = float(f_ref + double(m0));  // initial-state column: logD_t0 = frow_t + ct0
  const float log2_scale = log2f(params.scale);
  float frow[kRows], m_run[kRows], b_run[kRows];
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    const int64_t t = row0 + get<0>(tScS_rc(r, 0));
    frow[r] = t < S ? float(fc[t] - f_ref) : 0.f;
    m_run[r] = frow[r] + ct0;
    b_run[r] = 0.f;
  }
  // Gates of the next column tile, loaded one tile ahead by the first kBlockN threads.
  double pf_f = 0.0;
  float pf_i = 0.f;
  if (tidx < kBlockN) {
    const int64_t j = int64_t(n_block_max) * kBlockN + tidx;
    if (j < S) { pf_f = fc[j]; pf_i = ig[j]; }
  }

  Tensor acc_o = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDimV>>{});
  clear(acc_o);
  Tensor o_rc = make_tensor(acc_o.data(), acc_rowcol_layout(acc_o.layout()));

  // ---- initial state: b = q̂ n0, O = q̂ C0 (weight 1 at the starting max) ---------
  const bool has_n0 = params.n0_ptr != nullptr;
  if (Has_C0 || has_n0) {
    cp_async_wait<1>();  // Q has landed (the K tile may still be in flight)
    __syncthreads();
    if (has_n0) {
      constexpr int kThrPerRow = kNThreads / kBlockM;
      static_assert(kThrPerRow >= 1 && kThrPerRow <= 32 && (kThrPerRow & (kThrPerRow - 1)) == 0);
      const float* n0 = params.n0_ptr + bh * kHeadDimQK;
      const int r = tidx / kThrPerRow, part = tidx % kThrPerRow;
      float acc = 0.f;
      CUTE_UNROLL
      for (int d = part; d < kHeadDimQK; d += kThrPerRow) acc += float(sQ(r, d)) * n0[d];
      CUTE_UNROLL
      for (int o = kThrPerRow / 2; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (part == 0) s_qn0[r] = acc * params.scale;
      __syncthreads();
      CUTE_UNROLL
      for (int r2 = 0; r2 < kRows; ++r2) {
        if (get<1>(tScS_rc(r2, 0)) == 0) b_run[r2] = s_qn0[get<0>(tScS_rc(r2, 0))];
      }
    }
    if constexpr (Has_C0) {
      // C0 (fp32) = hi + mid + lo in bf16, q (fp16) = hi + lo in bf16: every product
      // is exact in the fp32 accumulator, so the state term keeps fp32 accuracy.
      typename Traits::TiledMmaState tiled_mma_st;
      auto thr_mma_st = tiled_mma_st.get_thread_slice(tidx);
      Tensor sVb = make_tensor(make_smem_ptr(reinterpret_cast<bf16*>(smem_) + Traits::kSmemQElems +
                                             Traits::kSmemKElems),
                               typename Traits::SmemLayoutV{});
      Tensor sVtb = make_tensor(sVb.data(), typename Traits::SmemLayoutVt{});
      auto smem_tiled_copy_Vb = make_tiled_copy_B(typename Traits::SmemCopyAtomStateT{}, tiled_mma_st);
      auto smem_thr_copy_Vb = smem_tiled_copy_Vb.get_thread_slice(tidx);
      Tensor tOsVtb = smem_thr_copy_Vb.partition_S(sVtb);
      Tensor tOrVtb = thr_mma_st.partition_fragment_B(sVtb);

      Tensor tSrQc = thr_mma.partition_fragment_A(local_tile(sQ, Shape<Int<kBlockM>, Int<kBlockN>>{}, make_coord(0, 0)));
      Tensor tSrQc_v = smem_thr_copy_Q.retile_D(tSrQc);
      Tensor tSrQhi = make_fragment_like<bf16>(tSrQc);
      Tensor tSrQlo = make_fragment_like<bf16>(tSrQc);
      constexpr int kKPerChunk = kBlockN / 16;
      constexpr int kVecPerRow = kHeadDimV / 4;
      constexpr int kVecPerThread = kBlockN * kVecPerRow / kNThreads;
      static_assert(kBlockN * kVecPerRow % kNThreads == 0);
      const float* c0 = params.c0_ptr + bh * kHeadDimQK * int64_t(params.DV) +
                        int64_t(dv_block) * kHeadDimV;

#pragma unroll 1
      for (int c = 0; c < kHeadDimQK / kBlockN; ++c) {
        CUTE_UNROLL
        for (int kk = 0; kk < kKPerChunk; ++kk)
          copy(smem_tiled_copy_Q, tSsQ(_, _, c * kKPerChunk + kk), tSrQc_v(_, _, kk));
        CUTE_UNROLL
        for (int e = 0; e < size(tSrQc); ++e) {
          const float x = float(tSrQc(e));
          const bf16 hi = bf16(x);
          tSrQhi(e) = hi;
          tSrQlo(e) = bf16(x - float(hi));
        }
#pragma unroll 1
        for (int term = 0; term < 3; ++term) {
          __syncthreads();  // the previous product is done reading sVb
          CUTE_UNROLL
          for (int u = 0; u < kVecPerThread; ++u) {
            const int idx = tidx + u * kNThreads;
            const int rr = idx / kVecPerRow, cc = idx % kVecPerRow;
            // Re-read per term (L1/L2 hits) rather than holding the chunk in registers.
            const float4 cv = *reinterpret_cast<const float4*>(
                c0 + int64_t(c * kBlockN + rr) * params.DV + cc * 4);
            float xs[4] = {cv.x, cv.y, cv.z, cv.w};
            CUTE_UNROLL
            for (int e = 0; e < 4; ++e) {
              float x = xs[e];
              bf16 part = bf16(x);
              if (term >= 1) { x -= float(part); part = bf16(x); }
              if (term >= 2) { x -= float(part); part = bf16(x); }
              sVb(rr, cc * 4 + e) = part;
            }
          }
          __syncthreads();
          gemm_rs(acc_o, tSrQhi, tOrVtb, tOsVtb, tiled_mma_st, smem_tiled_copy_Vb, smem_thr_copy_Vb);
          if (!Traits::kIsBf16 && term < 2)
            gemm_rs(acc_o, tSrQlo, tOrVtb, tOsVtb, tiled_mma_st, smem_tiled_copy_Vb, smem_thr_copy_Vb);
        }
      }
      CUTE_UNROLL
      for (int e = 0; e < size(acc_o); ++e) acc_o(e) *= params.scale;
    }
  }

  // ---- main loop over causal column tiles, diagonal first ------------------------
  for (int n = n_block_max; n >= 0; --n) {
    Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    cp_async_wait<0>();
    __syncthreads();  // K[n] landed; everyone is done with sV and the column terms

    if (tidx < kBlockN) {
      const int64_t j = int64_t(n) * kBlockN + tidx;
      const float ct = j < S ? float(double(pf_i) - (pf_f - f_ref)) : -INFINITY;
      s_ct[tidx] = ct;
      s_ct2[tidx] = ct * kLog2e;
      float mx = ct;
      CUTE_UNROLL
      for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      if ((tidx & 31) == 0) s_ctmax[tidx / 32] = mx;
      // Below the diagonal the decay is rank one: exp(logD_tj - m_t) =
      // exp(frow_t + mx - m_t) * exp(ct_j - mx), with mx the max of this 32-column
      // group, so both factors are <= 1 and only kBlockN + rows exponentials are needed.
      s_e[tidx] = mx == -INFINITY ? 0.f : ex2_approx((ct - mx) * kLog2e);
      if (n > 0) {  // every column of tile n-1 is < S
        const int64_t j2 = j - kBlockN;
        pf_f = fc[j2];
        pf_i = ig[j2];
      }
    }
    {
      Tensor tVgV = gmem_thr_copy.partition_S(v_tile(n));
      copy_rows_guarded(gmem_tiled_copy, tVgV, tVsV, tVcV, S - int64_t(n) * kBlockN);
      cp_async_fence();
    }

    gemm_ss(acc_s, tSrQ, tSrK, tSsQ, tSsK, tiled_mma, smem_tiled_copy_Q, smem_tiled_copy_K,
            smem_thr_copy_Q, smem_thr_copy_K);

    cp_async_wait<0>();
    __syncthreads();  // V[n] landed; everyone is done with sK; column terms visible
    if (n > 0) {
      Tensor tKgK = gmem_thr_copy.partition_S(k_tile(n - 1));
      copy_rows_guarded(gmem_tiled_copy, tKgK, tKsK, tKcK, S - int64_t(n - 1) * kBlockN);
      cp_async_fence();
    }

    Tensor s_rc = make_tensor(acc_s.data(), acc_rowcol_layout(acc_s.layout()));
    const int64_t col0 = int64_t(n) * kBlockN;
    // Diagonal tiles: exact per-element decay with the causal mask.
    auto update_masked = [&]() {
      float alpha[kRows];
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        const int64_t t = row0 + get<0>(tScS_rc(r, 0));
        float mt = -INFINITY;
        CUTE_UNROLL
        for (int c = 0; c < kCols; ++c) {
          const int cl = get<1>(tScS_rc(r, c));
          if (col0 + cl <= t) mt = fmaxf(mt, frow[r] + s_ct[cl]);
        }
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
        const float m_new = fmaxf(m_run[r], mt);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        alpha[r] = ex2_approx((m_run[r] - m_use) * kLog2e);
        m_run[r] = m_new;
        // p = exp(logD - m) * scale * (q . k), in log2 units with the scale folded in.
        const float rb2 = (frow[r] - m_use) * kLog2e + log2_scale;
        float bsum = 0.f;
        CUTE_UNROLL
        for (int c = 0; c < kCols; ++c) {
          const int cl = get<1>(tScS_rc(r, c));
          float p = ex2_approx(rb2 + s_ct2[cl]) * s_rc(r, c);
          if (col0 + cl > t) p = 0.f;
          s_rc(r, c) = p;
          bsum += p;
        }
        b_run[r] = b_run[r] * alpha[r] + bsum;
      }
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        CUTE_UNROLL
        for (int c = 0; c < size<1>(o_rc); ++c) o_rc(r, c) *= alpha[r];
      }
    };
    // Tiles below the diagonal: every column is causal for every row; rank-one decay.
    auto update_full = [&]() {
      constexpr int kGroups = kBlockN / 32;
      float gmax[kGroups];
      float ctmax = -INFINITY;
      CUTE_UNROLL
      for (int g = 0; g < kGroups; ++g) {
        gmax[g] = s_ctmax[g];
        ctmax = fmaxf(ctmax, gmax[g]);
      }
      float alpha[kRows];
      bool rescale = false;
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        const float m_new = fmaxf(m_run[r], frow[r] + ctmax);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        alpha[r] = ex2_approx((m_run[r] - m_use) * kLog2e);
        rescale |= alpha[r] != 1.f;
        m_run[r] = m_new;
        // Named scalars, not an array: a runtime-indexed array would go to local memory.
        const float rowf0 = ex2_approx((frow[r] + gmax[0] - m_use) * kLog2e + log2_scale);
        const float rowf1 = kGroups > 1
            ? ex2_approx((frow[r] + gmax[kGroups - 1] - m_use) * kLog2e + log2_scale) : rowf0;
        float bsum = 0.f;
        CUTE_UNROLL
        for (int c = 0; c < kCols; ++c) {
          const int cl = get<1>(tScS_rc(r, c));
          const float rf = (cl & 32) ? rowf1 : rowf0;
          const float p = s_rc(r, c) * (rf * s_e[cl]);
          s_rc(r, c) = p;
          bsum += p;
        }
        b_run[r] = b_run[r] * alpha[r] + bsum;
      }
      // The max rarely grows away from the diagonal: skip the O rescale then.
      if (__any_sync(0xffffffffu, rescale)) {
        CUTE_UNROLL
        for (int r = 0; r < kRows; ++r) {
          CUTE_UNROLL
          for (int c = 0; c < size<1>(o_rc); ++c) o_rc(r, c) *= alpha[r];
        }
      }
    };
    if (col0 + kBlockN - 1 > row0) update_masked();
    else update_full();

    Tensor rP = make_fragment_like<Element>(acc_s);
    CUTE_UNROLL
    for (int e = 0; e < size(acc_s); ++e) rP(e) = Element(acc_s(e));
    Tensor tOrP = make_tensor(rP.data(), acc_to_A_layout(rP.layout()));
    gemm_rs(acc_o, tOrP, tOrVt, tOsVt, tiled_mma, smem_tiled_copy_V, smem_thr_copy_V);
  }

  // ---- epilogue ---------------------------------------------------------------------
  const bool write_stats = dv_block == 0;
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    float bt = b_run[r];
    bt += __shfl_xor_sync(0xffffffffu, bt, 1);
    bt += __shfl_xor_sync(0xffffffffu, bt, 2);
    const float mt = m_run[r];
    const float ab = fabsf(bt);
    const float floor_v = expf(-mt);
    const float den = (ab != ab ? ab : fmaxf(ab, floor_v)) + params.eps;  // NaN b stays NaN
    const float inv = 1.f / den;
    CUTE_UNROLL
    for (int c = 0; c < size<1>(o_rc); ++c) o_rc(r, c) *= inv;
    const int64_t t = row0 + get<0>(tScS_rc(r, 0));
    if (write_stats && get<1>(tScS_rc(r, 0)) == 0 && t < S) {
      params.m_rows_ptr[bh * S + t] = mt;
      params.norm_rows_ptr[bh * S + t] = bt;
    }
  }

  Tensor rO = make_fragment_like<Element>(acc_o);
  CUTE_UNROLL
  for (int e = 0; e < size(acc_o); ++e) rO(e) = Element(acc_o(e));
  __syncthreads();  // all warps are done with sQ / sK / sV
  Tensor sO = make_tensor(sQ.data(), typename Traits::SmemLayoutO{});
  auto smem_tiled_copy_O = make_tiled_copy_C(typename Traits::SmemCopyAtomO{}, tiled_mma);
  auto smem_thr_copy_O = smem_tiled_copy_O.get_thread_slice(tidx);
  Tensor taccOrO = smem_thr_copy_O.retile_S(rO);
  Tensor taccOsO = smem_thr_copy_O.partition_D(sO);
  copy(smem_tiled_copy_O, taccOrO, taccOsO);
  __syncthreads();

  Tensor gO = make_tensor(make_gmem_ptr(h_base + row0 * params.h_row_stride),
                          Shape<Int<kBlockM>, Int<kHeadDimV>>{},
                          make_stride(params.h_row_stride, _1{}));
  typename Traits::GmemTiledCopyO gmem_tiled_copy_O;
  auto gmem_thr_copy_O = gmem_tiled_copy_O.get_thread_slice(tidx);
  Tensor tOsO = gmem_thr_copy_O.partition_S(sO);
  Tensor tOgO = gmem_thr_copy_O.partition_D(gO);
  Tensor tOcO = gmem_thr_copy_O.partition_D(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDimV>>{}));
  Tensor tOrO = make_tensor<Element>(shape(tOgO));
  copy(gmem_tiled_copy_O, tOsO, tOrO);
  CUTE_UNROLL
  for (int m = 0; m < size<1>(tOrO); ++m) {
    if (get<0>(tOcO(0, m, 0)) < S - row0) {
      CUTE_UNROLL
      for (int k = 0; k < size<2>(tOrO); ++k) copy(gmem_tiled_copy_O, tOrO(_, m, k), tOgO(_, m, k));
    }
  }
#endif  // sm_80 and newer
}

}  // namespace xlstm_sm80
