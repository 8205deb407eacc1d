// mma.sync mLSTM backward kernel (kinds kDhu, kDKV, kDK, kDV, kDQ; see
// mlstm_bwd_kernel_traits.h), for the sm80 family and, built with Turing atoms, sm75.
// One CTA per (output slice, stationary tile of kBlockM rows, batch*head). It walks
// the causal streamed tiles, recomputing the scores from the forward's statistics:
//
//   per step  wait tiles -> S = X_qk Y_qk^T (chunk loop over the head dim)
//             [-> G = X_hv Y_hv^T]  -> reload the tile the output GEMM does not read
//             -> weights and dS (or P) in registers -> out += dS * Y_out
//             -> reload the other tile.
//   epilogue  out * scale + optional fp32 state addend -> input dtype; row statistics.
//
// Element (r, c) of a step's tile is stationary row r and streamed row c: (t, j) for
// kDQ / kDhu and (j, t) for kDK / kDV / kDKV. Its log weight is a row term plus a column term
// (log2 units, see below), valid where j <= t; masked elements are selected to 0, never
// multiplied, so an overflowing exp above the diagonal cannot leak a NaN.
#pragma once

#include <cmath>
#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "../mlstm_log_weights.h"
#include "../mlstm_params.h"
#include "mlstm_bwd_kernel_traits.h"
#include "sm80_utils.h"

namespace xlstm_sm80 {

using namespace cute;

// Pointer and row stride of one (b, h) slice of a (B, NH, S, D) tensor.
template <class Element>
struct HeadView {
  const Element* ptr;
  int64_t row_stride;
};

template <class Traits>
__device__ __forceinline__ void mlstm_bwd_body(const MlstmBackwardParams& params) {
  using Element = typename Traits::Element;
  constexpr BwdKind kKind = Traits::kKind;
  constexpr bool kRowSt = Traits::kRowStationary;
  constexpr bool kNeedsDP = Traits::kNeedsDP;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kChunkQK = Traits::kChunkQK;
  constexpr int kChunkV = Traits::kChunkV;
  constexpr int kOutChunk = Traits::kOutChunk;

  extern __shared__ __align__(128) char smem_[];

  const int64_t S = params.S;
  const int DQK = params.DQK, DV = params.DV;
  const int n_qk = DQK / kChunkQK, n_v = DV / kChunkV;
  const int num_out = kKind == BwdKind::kDV     ? n_v
                      : kKind == BwdKind::kDhu  ? 1
                      : kKind == BwdKind::kDKV  ? max(n_qk, n_v)
                                                : n_qk;
  const int64_t num_tiles = (S + kBlockM - 1) / kBlockM;
  // Fastest: output slice, then stationary tile (longest causal range first), then
  // batch*head.
  int64_t bid = blockIdx.x;
  const int out_slice = int(bid % num_out);
  bid /= num_out;
  const int64_t m_block = kRowSt ? num_tiles - 1 - bid % num_tiles : bid % num_tiles;
  const int64_t bh = bid / num_tiles;
  // Pass kRowDotProducts over the flagged sequences only (the others take the
  // normalizer's terms from the forward's output, csrc/cuda/normalizer_grad.h). The
  // whole block leaves before its first barrier.
  if constexpr (kKind == BwdKind::kDhu) {
    if (params.row_pass_flags != nullptr && params.row_pass_flags[bh] == 0) return;
  }
  const int64_t b = bh / params.NH, h = bh % params.NH;
  const int tidx = threadIdx.x;
  const int64_t st0 = m_block * kBlockM;  // first stationary row

  auto head = [&](const void* p, int64_t bs, int64_t hs, int64_t rs) {
    return HeadView<Element>{reinterpret_cast<const Element*>(p) + b * bs + h * hs, rs};
  };
  const HeadView<Element> q = head(params.q_ptr, params.q_batch_stride, params.q_head_stride,
                                   params.q_row_stride);
  const HeadView<Element> k = head(params.k_ptr, params.k_batch_stride, params.k_head_stride,
                                   params.k_row_stride);
  const HeadView<Element> v = head(params.v_ptr, params.v_batch_stride, params.v_head_stride,
                                   params.v_row_stride);
  const HeadView<Element> dh = head(params.dh_ptr, params.dh_batch_stride,
                                    params.dh_head_stride, params.dh_row_stride);
  const HeadView<Element> x_qk = kRowSt ? q : k;
  const HeadView<Element> x_hv = kRowSt ? dh : v;
  const HeadView<Element> y_qk = kRowSt ? k : q;
  // kDV streams only its own DV slice of dh.
  const HeadView<Element> y_hv =
      kRowSt ? v
             : (kKind == BwdKind::kDV
                    ? HeadView<Element>{dh.ptr + int64_t(out_slice) * kChunkV, dh.row_stride}
                    : dh);
  const int n_yhv = kKind == BwdKind::kDV ? 1 : n_v;

  const double* fcum = params.fcum_ptr + bh * S;
  const float* rden = params.rden_ptr + bh * S;
  // log w = row term + column term against this CTA's first stationary row's F.
  const BwdLogWeights logw{fcum, params.igate_ptr + bh * S, params.m_ptr + bh * S, fcum[st0]};
  auto row_term = [&](int64_t t) { return logw.row(t); };
  auto col_term = [&](int64_t j) { return logw.col(j); };
  const float* dbp = params.db_ptr + bh * S;
  // rden and db exist only for pass kGradients: kDhu (pass kRowDotProducts, which
  // computes what they are made of) must not read them; they are null then.
  constexpr bool kHasRowGrads = kKind != BwdKind::kDhu;

  // Shared memory: [X_qk chunks][X_hv chunks][Y_qk chunks][Y_hv chunks][scalars].
  Element* sxqk = reinterpret_cast<Element*>(smem_);
  Element* sxhv = sxqk + int64_t(kBlockM) * DQK;
  Element* syqk = sxhv + (kNeedsDP ? int64_t(kBlockM) * DV : 0);
  Element* syhv = syqk + int64_t(kBlockN) * DQK;
  float* s_scal = reinterpret_cast<float*>(syhv + int64_t(kBlockN) * n_yhv * kChunkV);

  typename Traits::GmemTiledCopy gmem_tiled_copy;
  auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(tidx);
  // Rows [row0, row0 + kRows) of `src`, chunks [0, n_chunks), into consecutive
  // swizzled blocks at `dst`; rows at or past S are zero-filled.
  auto load_rows = [&](const HeadView<Element>& src, int64_t row0, auto rows_c, auto chunk_c,
                       int n_chunks, Element* dst) {
    constexpr int kRows = decltype(rows_c)::value;
    constexpr int kChunk = decltype(chunk_c)::value;
    using Layout = typename Traits::template SmemLayout<kRows, kChunk>;
    Tensor cS = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kRows>, Int<kChunk>>{}));
    for (int c = 0; c < n_chunks; ++c) {
      Tensor g = make_tensor(make_gmem_ptr(src.ptr + row0 * src.row_stride + int64_t(c) * kChunk),
                             Shape<Int<kRows>, Int<kChunk>>{}, make_stride(src.row_stride, _1{}));
      Tensor s = make_tensor(make_smem_ptr(dst + c * kRows * kChunk), Layout{});
      Tensor tg = gmem_thr_copy.partition_S(g);
      Tensor ts = gmem_thr_copy.partition_D(s);
      copy_rows_guarded(gmem_tiled_copy, tg, ts, cS, S - row0);
    }
  };
  auto load_y_qk = [&](int64_t y0) {
    load_rows(y_qk, y0, Int<kBlockN>{}, Int<kChunkQK>{}, n_qk, syqk);
  };
  auto load_y_hv = [&](int64_t y0) {
    load_rows(y_hv, y0, Int<kBlockN>{}, Int<kChunkV>{}, n_yhv, syhv);
  };

  // Streamed range: row-stationary walks columns j <= last row, diagonal first;
  // column-stationary walks rows t >= first column, diagonal first.
  const int64_t n_diag = kRowSt ? min(S - 1, st0 + kBlockM - 1) / kBlockN : st0 / kBlockN;
  const int64_t n_steps = kRowSt ? n_diag + 1 : (S - 1) / kBlockN - n_diag + 1;
  auto step_tile = [&](int64_t idx) { return kRowSt ? n_diag - idx : n_diag + idx; };

  // ---- prologue: stationary tiles and the first streamed tiles ---------------------
  load_rows(x_qk, st0, Int<kBlockM>{}, Int<kChunkQK>{}, n_qk, sxqk);
  if constexpr (kNeedsDP) load_rows(x_hv, st0, Int<kBlockM>{}, Int<kChunkV>{}, n_v, sxhv);
  load_y_qk(n_diag * kBlockN);
  load_y_hv(n_diag * kBlockN);
  cp_async_fence();

  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(tidx);
  auto smem_tiled_copy_A = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
  auto smem_thr_copy_A = smem_tiled_copy_A.get_thread_slice(tidx);
  auto smem_tiled_copy_B = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, tiled_mma);
  auto smem_thr_copy_B = smem_tiled_copy_B.get_thread_slice(tidx);
  auto smem_tiled_copy_Bt = make_tiled_copy_B(typename Traits::SmemCopyAtomT{}, tiled_mma);
  auto smem_thr_copy_Bt = smem_tiled_copy_Bt.get_thread_slice(tidx);

  auto smem_tensor = [](Element* p, auto layout) { return make_tensor(make_smem_ptr(p), layout); };
  using LXqk = typename Traits::SmemLayoutXqk;
  using LXv = typename Traits::SmemLayoutXv;
  using LYqk = typename Traits::SmemLayoutYqk;
  using LYv = typename Traits::SmemLayoutYv;
  using LYoutT = typename Traits::SmemLayoutYoutT;
  Tensor tSrXqk = thr_mma.partition_fragment_A(smem_tensor(sxqk, LXqk{}));
  Tensor tSrYqk = thr_mma.partition_fragment_B(smem_tensor(syqk, LYqk{}));
  Tensor tSrXv = thr_mma.partition_fragment_A(smem_tensor(sxhv, LXv{}));
  Tensor tSrYv = thr_mma.partition_fragment_B(smem_tensor(syhv, LYv{}));
  // The output GEMM's B operand: a chunk of Y_qk (kDQ, kDK, kDKV) or the dh slice (kDV);
  // kDKV's second output GEMM reads dh chunk s. (kDKV slices past a head dim's chunk
  // count skip that output; the pointer is clamped to stay inside the buffer.)
  const bool do_main = kKind != BwdKind::kDKV || out_slice < n_qk;
  const bool do_dv2 = Traits::kFusedDV && out_slice < n_v;
  Element* syout = kKind == BwdKind::kDV
                       ? syhv
                       : syqk + int64_t(min(out_slice, n_qk - 1)) * kBlockN * kChunkQK;
  Tensor tOrYt = thr_mma.partition_fragment_B(smem_tensor(syout, LYoutT{}));
  Tensor tOsYt = smem_thr_copy_Bt.partition_S(smem_tensor(syout, LYoutT{}));
  using LYvT = typename Traits::SmemLayoutYvT;
  Element* syout2 = syhv + int64_t(min(out_slice, n_v - 1)) * kBlockN * kChunkV;
  Tensor tOrYt2 = thr_mma.partition_fragment_B(smem_tensor(syout2, LYvT{}));
  Tensor tOsYt2 = smem_thr_copy_Bt.partition_S(smem_tensor(syout2, LYvT{}));

  // Coordinates of this thread's score elements: (stationary row, streamed row).
  Tensor tScS = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), acc_rowcol_layout(tScS.layout()));
  constexpr int kRows = decltype(size<0>(tScS_rc))::value;
  constexpr int kCols = decltype(size<1>(tScS_rc))::value;

  // Stationary-row terms: (row term, rden, db) of rows t for kDQ / kDhu, the column
  // term of columns j otherwise.
  float x_exp[kRows], x_rden[kRows], x_db[kRows], row_stat[kRows], row_b[kRows];
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    const int64_t idx = st0 + get<0>(tScS_rc(r, 0));
    const bool in = idx < S;
    x_exp[r] = in ? (kRowSt ? row_term(idx) : col_term(idx)) : -INFINITY;
    x_rden[r] = in && kRowSt && kHasRowGrads ? rden[idx] : 0.f;
    x_db[r] = in && kRowSt && kHasRowGrads ? dbp[idx] : 0.f;
    row_stat[r] = 0.f;
    row_b[r] = 0.f;
  }

  // Score tile (accumulator layout) -> A operand of the output GEMM.
  auto as_a_operand = [](auto layout) {
    if constexpr (Traits::kSm75) return layout;
    else return acc_to_A_layout(layout);
  };
  Tensor acc_out = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kOutChunk>>{});
  clear(acc_out);
  constexpr int kOut2 = Traits::kFusedDV ? kChunkV : 16;  // unused (and tiny) unless kDKV
  Tensor acc_out2 = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kOut2>>{});
  if constexpr (Traits::kFusedDV) clear(acc_out2);
  const float scale = params.scale;

  for (int64_t step = 0; step < n_steps; ++step) {
    const int64_t n = step_tile(step);
    const int64_t y0 = n * kBlockN;
    // Streamed-row scalars of this step into the parity buffer (the other parity may
    // still be read by slower warps of the previous step).
    float* sc = s_scal + (step & 1) * 3 * kBlockN;
    if (tidx < kBlockN) {
      const int64_t idx = y0 + tidx;
      const bool in = idx < S;
      sc[tidx] = in ? (kRowSt ? col_term(idx) : row_term(idx)) : -INFINITY;
      sc[kBlockN + tidx] = in && !kRowSt && kHasRowGrads ? rden[idx] : 0.f;
      sc[2 * kBlockN + tidx] = in && !kRowSt && kHasRowGrads ? dbp[idx] : 0.f;
    }
    cp_async_wait<0>();
    __syncthreads();  // this step's tiles and scalars are visible

    Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    for (int c = 0; c < n_qk; ++c) {
      Tensor sX = smem_tensor(sxqk + c * kBlockM * kChunkQK, LXqk{});
      Tensor sY = smem_tensor(syqk + c * kBlockN * kChunkQK, LYqk{});
      gemm_ss(acc_s, tSrXqk, tSrYqk, smem_thr_copy_A.partition_S(sX),
              smem_thr_copy_B.partition_S(sY), tiled_mma, smem_tiled_copy_A, smem_tiled_copy_B,
              smem_thr_copy_A, smem_thr_copy_B);
    }
    Tensor acc_g = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    if constexpr (kNeedsDP) {
      clear(acc_g);
      for (int c = 0; c < n_v; ++c) {
        Tensor sX = smem_tensor(sxhv + c * kBlockM * kChunkV, LXv{});
        Tensor sY = smem_tensor(syhv + c * kBlockN * kChunkV, LYv{});
        gemm_ss(acc_g, tSrXv, tSrYv, smem_thr_copy_A.partition_S(sX),
                smem_thr_copy_B.partition_S(sY), tiled_mma, smem_tiled_copy_A,
                smem_tiled_copy_B, smem_thr_copy_A, smem_thr_copy_B);
      }
    }
    const bool has_next = step + 1 < n_steps;
    const int64_t y0_next = has_next ? step_tile(step + 1) * kBlockN : 0;
    // The tile the output GEMM does not read can be refilled now.
    __syncthreads();
    if (has_next && kKind != BwdKind::kDKV) {  // kDKV reads both tiles in its output GEMMs
      if constexpr (kKind == BwdKind::kDV) load_y_qk(y0_next);
      else load_y_hv(y0_next);
      cp_async_fence();
    }

    // Weights, dS (or P) and the row statistics, in registers.
    Tensor s_rc = make_tensor(acc_s.data(), acc_rowcol_layout(acc_s.layout()));
    Tensor g_rc = make_tensor(acc_g.data(), acc_rowcol_layout(acc_g.layout()));
    Tensor rX = make_fragment_like<Element>(acc_s);
    Tensor x_rc = make_tensor(rX.data(), acc_rowcol_layout(rX.layout()));
    Tensor rX2 = make_fragment_like<Element>(acc_s);  // kDKV: P^T for dV
    Tensor x2_rc = make_tensor(rX2.data(), acc_rowcol_layout(rX2.layout()));
    const bool masked = kRowSt ? y0 + kBlockN - 1 > st0 : y0 < st0 + kBlockM - 1;
    auto elementwise = [&](auto masked_c) {
      constexpr bool kMasked = decltype(masked_c)::value;
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        const int64_t srow = st0 + get<0>(tScS_rc(r, 0));
        float stat = 0.f, bsum = 0.f;
        CUTE_UNROLL
        for (int c = 0; c < kCols; ++c) {
          const int cl = get<1>(tScS_rc(r, c));
          const float s = s_rc(r, c) * scale;
          const float w = ex2_approx(x_exp[r] + sc[cl]);
          const float rd = kRowSt ? x_rden[r] : sc[kBlockN + cl];
          bool valid = true;
          if constexpr (kMasked) valid = kRowSt ? y0 + cl <= srow : y0 + cl >= srow;
          float x;
          if constexpr (kKind == BwdKind::kDhu) {
            const float p = valid ? w * s : 0.f;
            stat += p * g_rc(r, c);
            bsum += p;
            x = 0.f;
          } else if constexpr (kNeedsDP) {
            const float db = kRowSt ? x_db[r] : sc[2 * kBlockN + cl];
            const float ds = valid ? w * fmaf(rd, g_rc(r, c), db) : 0.f;
            stat += ds * s;
            x = ds;
            if constexpr (Traits::kFusedDV) x2_rc(r, c) = Element(valid ? w * s * rd : 0.f);
          } else {
            x = valid ? w * s * rd : 0.f;
          }
          if constexpr (Traits::kHasOutputGemm) x_rc(r, c) = Element(x);
        }
        row_stat[r] += stat;
        if constexpr (kKind == BwdKind::kDhu) row_b[r] += bsum;
      }
    };
    if (masked) elementwise(cute::true_type{});
    else elementwise(cute::false_type{});

    if constexpr (Traits::kHasOutputGemm) {
      if (do_main) {
        Tensor tOrX = make_tensor(rX.data(), as_a_operand(rX.layout()));
        gemm_rs(acc_out, tOrX, tOrYt, tOsYt, tiled_mma, smem_tiled_copy_Bt, smem_thr_copy_Bt);
      }
    }
    if constexpr (Traits::kFusedDV) {
      if (do_dv2) {
        Tensor tOrX2 = make_tensor(rX2.data(), as_a_operand(rX2.layout()));
        gemm_rs(acc_out2, tOrX2, tOrYt2, tOsYt2, tiled_mma, smem_tiled_copy_Bt, smem_thr_copy_Bt);
      }
    }

    __syncthreads();  // everyone is done reading the output GEMMs' tiles
    if (has_next) {
      if constexpr (kKind == BwdKind::kDV) load_y_hv(y0_next);
      else load_y_qk(y0_next);
      if constexpr (kKind == BwdKind::kDKV) load_y_hv(y0_next);
      cp_async_fence();
    }
  }

  // ---- epilogue -------------------------------------------------------------------
  if constexpr (kNeedsDP) {
    float* stat_out = kKind == BwdKind::kDhu ? params.dhu_ptr
                      : kRowSt               ? params.rowsum_ptr
                                             : params.di_ptr;
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float st = row_stat[r];
      st += __shfl_xor_sync(0xffffffffu, st, 1);
      st += __shfl_xor_sync(0xffffffffu, st, 2);
      const int64_t idx = st0 + get<0>(tScS_rc(r, 0));
      if (out_slice == 0 && get<1>(tScS_rc(r, 0)) == 0 && idx < S) stat_out[bh * S + idx] = st;
      if constexpr (kKind == BwdKind::kDhu) {
        float bt = row_b[r];
        bt += __shfl_xor_sync(0xffffffffu, bt, 1);
        bt += __shfl_xor_sync(0xffffffffu, bt, 2);
        if (get<1>(tScS_rc(r, 0)) == 0 && idx < S) params.bsum_ptr[bh * S + idx] = bt;
      }
    }
  }

  if constexpr (!Traits::kHasOutputGemm) return;
  // acc (kBlockM x kChunk) * out_scale (+ the state addend) -> columns [slice * kChunk, ...)
  // of a contiguous (B, NH, S, d_out) output.
  auto store = [&](auto const& acc, auto chunk_c, void* out_ptr, const RowStateAddend& add,
                   int d_out, float out_scale) {
    constexpr int kChunk = decltype(chunk_c)::value;
    const int64_t col0 = int64_t(out_slice) * kChunk;
    Element* out = reinterpret_cast<Element*>(out_ptr) + bh * S * d_out + col0;
    const float* add_x = add.x != nullptr ? add.x + bh * S * d_out + col0 : nullptr;
    const float* add_y = add.y != nullptr ? add.y + bh * d_out + col0 : nullptr;
    Tensor tOcO = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kChunk>>{}));
    CUTE_UNROLL
    for (int e = 0; e < size(acc); ++e) {
      const int64_t row = st0 + get<0>(tOcO(e));
      if (row < S) {
        const int col = get<1>(tOcO(e));
        const int64_t off = row * d_out + col;
        float val = acc(e) * out_scale;
        if (add_x != nullptr) val = fmaf(add.row_scale[bh * S + row], add_x[off], val);
        if (add_y != nullptr) val = fmaf(add.y_row_scale[bh * S + row], add_y[col], val);
        out[off] = Element(val);
      }
    }
  };
  if constexpr (kKind == BwdKind::kDQ) {
    store(acc_out, Int<kOutChunk>{}, params.dq_ptr, params.dq_add, DQK, scale);
  } else if constexpr (kKind == BwdKind::kDV) {
    store(acc_out, Int<kOutChunk>{}, params.dv_ptr, params.dv_add, DV, 1.f);
  } else {
    if (do_main) store(acc_out, Int<kOutChunk>{}, params.dk_ptr, params.dk_add, DQK, scale);
    if constexpr (Traits::kFusedDV) {
      if (do_dv2) store(acc_out2, Int<kChunkV>{}, params.dv_ptr, params.dv_add, DV, 1.f);
    }
  }
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kNThreads)
    mlstm_bwd_sm80_kernel(const __grid_constant__ MlstmBackwardParams params) {
// cp.async and bf16 MMA need sm_80; the kSm75 variant needs sm_75. On older archs of
// the build the body is empty (the dispatcher never launches it there).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 750
  return;
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  if constexpr (Traits::kSm75) mlstm_bwd_body<Traits>(params);
#else
  mlstm_bwd_body<Traits>(params);
#endif
}

}  // namespace xlstm_sm80
