// The sm_90a mLSTM backward kernel (kinds kDhu, kDQ, kDKV; see
// mlstm_bwd_sm90_kernel_traits.h). One CTA per (output chunk, stationary tile of 128
// rows, batch*head): a producer warpgroup streams the causal 64-row tiles of the other
// side through a two-stage TMA pipeline; each consumer warpgroup owns 64 stationary
// rows and per streamed tile runs
//
//   S = X_qk Y_qk^T, dP = X_hv Y_hv^T          (SS WGMMA, fp32 accumulators)
//   weights w from the forward's statistics, dS (or P) in registers
//   out chunk += dS Y_chunk  (and P^T dH for dV)  (RS WGMMA)
//
// with the arithmetic of the sm80 backward (csrc/sm80/mlstm_bwd_kernel.h): log w = row
// term + column term, each formed in fp64 against the CTA's reference F and rounded
// once (log2 units); masked elements are selected to 0, never multiplied. Element
// (r, c) of a score tile is stationary row r, streamed row c: (t, j) for kDhu / kDQ,
// (j, t) for kDKV.
#pragma once

#include <cmath>
#include <cstdint>

#include <cute/arch/cluster_sm90.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/cutlass.h>
#include <cutlass/pipeline/pipeline.hpp>

#include "mlstm_bwd_sm90_kernel_traits.h"
#include "sm90_utils.h"

namespace xlstm_sm90 {

using namespace cute;

constexpr double kBwdLog2e = 1.4426950408889634;

// What a CTA computes.
struct BwdTile {
  int64_t b, h, bh;
  int m_block;       // stationary tile: rows [st0, st0 + kBlockM)
  int64_t st0;
  int out_slice;     // output chunk
  int n_first, n_last;  // streamed tiles n_first .. n_last (rows n * kBlockN ...)
};

template <class Traits>
CUTLASS_DEVICE BwdTile bwd_tile(const MlstmBackwardParams& p) {
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN;
  const int64_t num_tiles = (p.S + kBlockM - 1) / kBlockM;
  // Fastest: output chunk, then stationary tile (longest causal range first), then
  // batch*head: CTAs that run together share their streamed tiles in L2.
  int64_t bid = blockIdx.x;
  BwdTile t;
  t.out_slice = static_cast<int>(bid % Traits::kNumOutSlices);
  bid /= Traits::kNumOutSlices;
  t.m_block = static_cast<int>(Traits::kRowStationary ? num_tiles - 1 - bid % num_tiles
                                                      : bid % num_tiles);
  t.bh = bid / num_tiles;
  t.b = t.bh / p.NH;
  t.h = t.bh % p.NH;
  t.st0 = static_cast<int64_t>(t.m_block) * kBlockM;
  if constexpr (Traits::kRowStationary) {  // columns j <= last row
    t.n_first = 0;
    const int64_t last = t.st0 + kBlockM - 1 < p.S - 1 ? t.st0 + kBlockM - 1 : p.S - 1;
    t.n_last = static_cast<int>(last / kBlockN);
  } else {  // rows t >= first column
    t.n_first = static_cast<int>(t.st0 / kBlockN);
    t.n_last = static_cast<int>((p.S - 1) / kBlockN);
  }
  return t;
}

// Producer: one thread issues every TMA (the stationary tiles once, then the streamed
// tiles through the pipeline).
template <class Traits>
CUTLASS_DEVICE void bwd_load(typename Traits::Params const& params,
                             typename Traits::SharedStorage& storage,
                             typename Traits::MainloopPipeline& pipeline, BwdTile const& tile) {
  using MainloopPipeline = typename Traits::MainloopPipeline;
  using PipelineState = typename Traits::PipelineState;
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN;
  constexpr int kDQK = Traits::kDQK, kDV = Traits::kDV;
  const MlstmBackwardParams& p = params.p;
  const auto shape_qk = make_shape(static_cast<int>(p.S), kDQK, static_cast<int>(p.NH),
                                   static_cast<int>(p.B));
  const auto shape_v = make_shape(static_cast<int>(p.S), kDV, static_cast<int>(p.NH),
                                  static_cast<int>(p.B));
  const int b = static_cast<int>(tile.b), h = static_cast<int>(tile.h);
  Tensor gXqk = local_tile(params.tma_xqk.get_tma_tensor(shape_qk)(_, _, h, b),
                           Shape<Int<kBlockM>, Int<kDQK>>{}, make_coord(tile.m_block, _0{}));
  Tensor gXv = local_tile(params.tma_xv.get_tma_tensor(shape_v)(_, _, h, b),
                          Shape<Int<kBlockM>, Int<kDV>>{}, make_coord(tile.m_block, _0{}));
  Tensor gYqk = local_tile(params.tma_yqk.get_tma_tensor(shape_qk)(_, _, h, b),
                           Shape<Int<kBlockN>, Int<kDQK>>{}, make_coord(_, _0{}));  // (N, DQK, n)
  Tensor gYv = local_tile(params.tma_yv.get_tma_tensor(shape_v)(_, _, h, b),
                          Shape<Int<kBlockN>, Int<kDV>>{}, make_coord(_, _0{}));    // (N, DV, n)
  Tensor sXqk = make_tensor(make_smem_ptr(storage.smem_xqk.data()), typename Traits::SmemLayoutXqk{});
  Tensor sXv = make_tensor(make_smem_ptr(storage.smem_xv.data()), typename Traits::SmemLayoutXv{});
  Tensor sYqk = make_tensor(make_smem_ptr(storage.smem_yqk.data()), typename Traits::SmemLayoutYqk{});
  Tensor sYv = make_tensor(make_smem_ptr(storage.smem_yv.data()), typename Traits::SmemLayoutYv{});
  auto [tXgXqk, tXsXqk] = tma_partition(params.tma_xqk, _0{}, Layout<_1>{},
                                        group_modes<0, 2>(sXqk), group_modes<0, 2>(gXqk));
  auto [tXgXv, tXsXv] = tma_partition(params.tma_xv, _0{}, Layout<_1>{}, group_modes<0, 2>(sXv),
                                      group_modes<0, 2>(gXv));
  auto [tYgYqk, tYsYqk] = tma_partition(params.tma_yqk, _0{}, Layout<_1>{},
                                        group_modes<0, 2>(sYqk), group_modes<0, 2>(gYqk));
  auto [tYgYv, tYsYv] = tma_partition(params.tma_yv, _0{}, Layout<_1>{}, group_modes<0, 2>(sYv),
                                      group_modes<0, 2>(gYv));

  storage.barrier_x.arrive_and_expect_tx(Traits::kTmaBytesX);
  uint64_t& bar_x = reinterpret_cast<uint64_t&>(storage.barrier_x);
  copy(params.tma_xqk.with(bar_x, 0), tXgXqk, tXsXqk);
  copy(params.tma_xv.with(bar_x, 0), tXgXv, tXsXv);
  PipelineState write = cutlass::make_producer_start_state<MainloopPipeline>();
  for (int n = tile.n_first; n <= tile.n_last; ++n) {
    pipeline.producer_acquire(write);
    uint64_t* full = pipeline.producer_get_barrier(write);
    copy(params.tma_yqk.with(*full, 0), tYgYqk(_, n), tYsYqk(_, write.index()));
    copy(params.tma_yv.with(*full, 0), tYgYv(_, n), tYsYv(_, write.index()));
    ++write;
  }
}

// Consumer warpgroups: thread_idx in [0, kNumMmaThreads).
template <class Traits>
CUTLASS_DEVICE void bwd_consume(typename Traits::Params const& params,
                                typename Traits::SharedStorage& storage,
                                typename Traits::MainloopPipeline& pipeline,
                                BwdTile const& tile, int thread_idx) {
  using Element = typename Traits::Element;
  using PipelineState = typename Traits::PipelineState;
  constexpr BwdKind kKind = Traits::kKind;
  constexpr bool kRowSt = Traits::kRowStationary;
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN;
  constexpr int kDQK = Traits::kDQK, kDV = Traits::kDV;
  constexpr int kChunkQK = Traits::kChunkQK, kChunkV = Traits::kChunkV;
  // rden and db exist only for pass kGradients: kDhu (pass kRowDotProducts, which
  // computes what they are made of) must not read them; they are null then.
  constexpr bool kHasRowGrads = kKind != BwdKind::kDhu;
  const MlstmBackwardParams& p = params.p;
  const int64_t S = p.S, bh = tile.bh, st0 = tile.st0;
  const int wg = thread_idx / 128, tid_wg = thread_idx % 128;

  typename Traits::TiledMmaS mma_s;
  typename Traits::TiledMmaP mma_p;
  typename Traits::TiledMmaOutQK mma_oqk;
  typename Traits::TiledMmaOutV mma_ov;
  auto thr_s = mma_s.get_thread_slice(thread_idx);
  auto thr_p = mma_p.get_thread_slice(thread_idx);
  auto thr_oqk = mma_oqk.get_thread_slice(thread_idx);
  auto thr_ov = mma_ov.get_thread_slice(thread_idx);

  Tensor sXqk = make_tensor(make_smem_ptr(storage.smem_xqk.data()), typename Traits::SmemLayoutXqk{});
  Tensor sXv = make_tensor(make_smem_ptr(storage.smem_xv.data()), typename Traits::SmemLayoutXv{});
  Tensor sYqk = make_tensor(make_smem_ptr(storage.smem_yqk.data()), typename Traits::SmemLayoutYqk{});
  Tensor sYv = make_tensor(make_smem_ptr(storage.smem_yv.data()), typename Traits::SmemLayoutYv{});
  Tensor tSrX = thr_s.partition_fragment_A(sXqk);  // (MMA, 1, DQK/16) descriptors
  Tensor tSrY = thr_s.partition_fragment_B(sYqk);  // (MMA, 1, DQK/16, stage)
  Tensor tPrX = thr_p.partition_fragment_A(sXv);
  Tensor tPrY = thr_p.partition_fragment_B(sYv);

  // The output GEMMs' B operands: this CTA's chunk of each streamed stage, transposed.
  static_assert(cosize_v<typename Traits::SmemLayoutYqk> == kBlockN * kDQK * Traits::kStages);
  static_assert(cosize_v<typename Traits::SmemLayoutYv> == kBlockN * kDV * Traits::kStages);
  const int chunk_qk = tile.out_slice < Traits::kNumChunksQK ? tile.out_slice : 0;
  const int chunk_v = tile.out_slice < Traits::kNumChunksV ? tile.out_slice : 0;
  auto out_operand_qk = [&](int stage) {
    Tensor t = make_tensor(make_smem_ptr(storage.smem_yqk.data() + stage * kBlockN * kDQK +
                                         chunk_qk * kBlockN * kChunkQK),
                           typename Traits::template SmemLayoutChunkT<kChunkQK>{});
    return thr_oqk.partition_fragment_B(t);
  };
  auto out_operand_v = [&](int stage) {
    Tensor t = make_tensor(make_smem_ptr(storage.smem_yv.data() + stage * kBlockN * kDV +
                                         chunk_v * kBlockN * kChunkV),
                           typename Traits::template SmemLayoutChunkT<kChunkV>{});
    return thr_ov.partition_fragment_B(t);
  };
  // kDQ: dq chunk. kDKV: dk chunk (slices < kNumChunksQK) and dv chunk (slices <
  // kNumChunksV). Both CTA-uniform.
  const bool do_qk_out = kKind == BwdKind::kDQ ||
                         (kKind == BwdKind::kDKV && tile.out_slice < Traits::kNumChunksQK);
  const bool do_v_out = kKind == BwdKind::kDKV && tile.out_slice < Traits::kNumChunksV;
  // dP is needed for everything but a kDKV slice that only writes dv.
  const bool need_dp = kKind != BwdKind::kDKV || do_qk_out;

  Tensor tSrS = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
  Tensor tSrP = partition_fragment_C(mma_p, Shape<Int<kBlockM>, Int<kBlockN>>{});
  Tensor s_rc = make_tensor(tSrS.data(), acc_layout_rowcol(tSrS.layout()));
  Tensor g_rc = make_tensor(tSrP.data(), acc_layout_rowcol(tSrP.layout()));
  Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), acc_layout_rowcol(tScS.layout()));
  constexpr int kRows = decltype(size<0>(s_rc))::value;
  constexpr int kCols = decltype(size<1>(s_rc))::value;
  static_assert(kRows == 2);

  Tensor acc_qk = partition_fragment_C(mma_oqk, Shape<Int<kBlockM>, Int<kChunkQK>>{});
  Tensor acc_v = partition_fragment_C(mma_ov, Shape<Int<kBlockM>, Int<kChunkV>>{});
  clear(acc_qk);
  clear(acc_v);

  const double* fcum = p.fcum_ptr + bh * S;
  const float* ig = p.igate_ptr + bh * S;
  const float* mrow = p.m_ptr + bh * S;
  const float* rden = p.rden_ptr + bh * S;
  const float* dbp = p.db_ptr + bh * S;
  const double f_ref = fcum[st0];
  auto row_term = [&](int64_t t) {
    return static_cast<float>((fcum[t] - f_ref - static_cast<double>(mrow[t])) * kBwdLog2e);
  };
  auto col_term = [&](int64_t j) {
    return static_cast<float>((static_cast<double>(ig[j]) - (fcum[j] - f_ref)) * kBwdLog2e);
  };

  // Stationary-row terms: (row term, rden, db) of rows t for kDhu / kDQ, the column
  // term of columns j for kDKV.
  float x_exp[kRows], x_rden[kRows], x_db[kRows], row_stat[kRows], row_b[kRows];
  int64_t x_idx[kRows];
  CUTLASS_PRAGMA_UNROLL
  for (int r = 0; r < kRows; ++r) {
    x_idx[r] = st0 + get<0>(tScS_rc(r, 0));
    const bool in = x_idx[r] < S;
    x_exp[r] = in ? (kRowSt ? row_term(x_idx[r]) : col_term(x_idx[r])) : -INFINITY;
    x_rden[r] = in && kRowSt && kHasRowGrads ? rden[x_idx[r]] : 0.f;
    x_db[r] = in && kRowSt && kHasRowGrads ? dbp[x_idx[r]] : 0.f;
    row_stat[r] = 0.f;
    row_b[r] = 0.f;
  }

  // Streamed-row scalars: thread tid_wg < kBlockN fetches those of one row a step
  // ahead (registers), then writes them to this warpgroup's parity buffer; the named
  // barrier of step n + 1 orders the buffer's reuse at step n + 2.
  float pf[3] = {-INFINITY, 0.f, 0.f};
  auto prefetch = [&](int n) {
    const int64_t idx = static_cast<int64_t>(n) * kBlockN + tid_wg;
    if (tid_wg < kBlockN) {
      const bool in = idx < S;
      pf[0] = in ? (kRowSt ? col_term(idx) : row_term(idx)) : -INFINITY;
      if constexpr (!kRowSt) {
        pf[1] = in ? rden[idx] : 0.f;
        pf[2] = in ? dbp[idx] : 0.f;
      }
    }
  };
  prefetch(tile.n_first);

  storage.barrier_x.wait(0);

  const float scale = p.scale;
  PipelineState read;
  for (int n = tile.n_first, step = 0; n <= tile.n_last; ++n, ++step) {
    float (*sc)[kBlockN] = storage.scalars[wg][step & 1];
    if (tid_wg < kBlockN) {
      CUTLASS_PRAGMA_UNROLL
      for (int k = 0; k < Traits::kNumScalars; ++k) sc[k][tid_wg] = pf[k];
    }
    named_barrier_sync(1 + wg, 128);
    if (n < tile.n_last) prefetch(n + 1);

    pipeline.consumer_wait(read);
    const int stage = read.index();
    wgmma_issue</*kZeroInit=*/true>(mma_s, tSrX, tSrY(_, _, _, stage), tSrS);
    if (need_dp) wgmma_issue</*kZeroInit=*/true>(mma_p, tPrX, tPrY(_, _, _, stage), tSrP);
    warpgroup_wait<0>();
    warpgroup_fence_operand(tSrS);
    warpgroup_fence_operand(tSrP);

    // Weights, dS (into the dP accumulator) and P (kDKV's dv operand, into the S
    // accumulator), the row statistics; all in registers.
    const int64_t y0 = static_cast<int64_t>(n) * kBlockN;
    const bool masked = kRowSt ? y0 + kBlockN - 1 > st0 : y0 < st0 + kBlockM - 1;
    auto elementwise = [&](auto masked_c, auto dp_c) {
      constexpr bool kMasked = decltype(masked_c)::value;
      constexpr bool kDP = decltype(dp_c)::value;
      CUTLASS_PRAGMA_UNROLL
      for (int r = 0; r < kRows; ++r) {
        float stat = 0.f, bsum = 0.f;
        CUTLASS_PRAGMA_UNROLL
        for (int c = 0; c < kCols; ++c) {
          const int cl = get<1>(tScS_rc(r, c));
          const float s = s_rc(r, c) * scale;
          const float w = exp2f(x_exp[r] + sc[0][cl]);
          bool valid = true;
          if constexpr (kMasked) valid = kRowSt ? y0 + cl <= x_idx[r] : y0 + cl >= x_idx[r];
          if constexpr (kKind == BwdKind::kDhu) {
            const float pw = valid ? w * s : 0.f;
            stat += pw * g_rc(r, c);
            bsum += pw;
          } else {
            const float rd = kRowSt ? x_rden[r] : sc[1][cl];
            if constexpr (kDP) {
              const float db = kRowSt ? x_db[r] : sc[2][cl];
              const float ds = valid ? w * fmaf(rd, g_rc(r, c), db) : 0.f;
              stat += ds * s;
              g_rc(r, c) = ds;
            }
            if constexpr (kKind == BwdKind::kDKV) s_rc(r, c) = valid ? w * s * rd : 0.f;
          }
        }
        row_stat[r] += stat;
        if constexpr (kKind == BwdKind::kDhu) row_b[r] += bsum;
      }
    };
    if (need_dp) {
      if (masked) elementwise(cute::true_type{}, cute::true_type{});
      else elementwise(cute::false_type{}, cute::true_type{});
    } else {
      if (masked) elementwise(cute::true_type{}, cute::false_type{});
      else elementwise(cute::false_type{}, cute::false_type{});
    }

    if constexpr (kKind != BwdKind::kDhu) {
      if (do_qk_out) {
        Tensor tOrDS = convert_regs<Element>(tSrP, acc_layout_as_a_operand(tSrP.layout()));
        wgmma_issue</*kZeroInit=*/false>(mma_oqk, tOrDS, out_operand_qk(stage), acc_qk);
      }
      if constexpr (kKind == BwdKind::kDKV) {
        if (do_v_out) {
          Tensor tOrP = convert_regs<Element>(tSrS, acc_layout_as_a_operand(tSrS.layout()));
          wgmma_issue</*kZeroInit=*/false>(mma_ov, tOrP, out_operand_v(stage), acc_v);
        }
      }
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc_qk);
      warpgroup_fence_operand(acc_v);
    }
    pipeline.consumer_release(read);
    ++read;
  }

  // ---- epilogue: row statistics (output chunk 0 only), then the output chunks -----
  {
    float* stat_out = kKind == BwdKind::kDhu ? p.dhu_ptr : kRowSt ? p.rowsum_ptr : p.di_ptr;
    const bool writer = tile.out_slice == 0 && thread_idx % 4 == 0;
    CUTLASS_PRAGMA_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const float st = quad_sum(row_stat[r]);
      if (writer && x_idx[r] < S) stat_out[bh * S + x_idx[r]] = st;
      if constexpr (kKind == BwdKind::kDhu) {
        const float bt = quad_sum(row_b[r]);
        if (writer && x_idx[r] < S) p.bsum_ptr[bh * S + x_idx[r]] = bt;
      }
    }
  }
  if constexpr (kKind == BwdKind::kDhu) return;
  // acc (kBlockM x kChunk) * out_scale (+ the state addend) -> columns
  // [chunk * kChunk, ...) of a contiguous (B, NH, S, d_out) output.
  auto store = [&](auto const& acc, auto const& thr_mma, auto chunk_c, int chunk, void* out_ptr,
                   const RowStateAddend& add, int d_out, float out_scale) {
    constexpr int kChunk = decltype(chunk_c)::value;
    const int64_t col0 = static_cast<int64_t>(chunk) * kChunk;
    Element* out = reinterpret_cast<Element*>(out_ptr) + bh * S * d_out + col0;
    const float* add_x = add.x != nullptr ? add.x + bh * S * d_out + col0 : nullptr;
    const float* add_y = add.y != nullptr ? add.y + bh * d_out + col0 : nullptr;
    Tensor tOcO = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kChunk>>{}));
    CUTLASS_PRAGMA_UNROLL
    for (int e = 0; e < size(acc); ++e) {
      const int64_t row = st0 + get<0>(tOcO(e));
      if (row < S) {
        const int col = get<1>(tOcO(e));
        const int64_t off = row * d_out + col;
        float val = acc(e) * out_scale;
        if (add_x != nullptr) val = fmaf(add.row_scale[bh * S + row], add_x[off], val);
        if (add_y != nullptr) val = fmaf(add.y_row_scale[bh * S + row], add_y[col], val);
        out[off] = static_cast<Element>(val);
      }
    }
  };
  if constexpr (kKind == BwdKind::kDQ) {
    store(acc_qk, thr_oqk, Int<kChunkQK>{}, chunk_qk, p.dq_ptr, p.dq_add, kDQK, scale);
  } else {
    if (do_qk_out) store(acc_qk, thr_oqk, Int<kChunkQK>{}, chunk_qk, p.dk_ptr, p.dk_add, kDQK, scale);
    if (do_v_out) store(acc_v, thr_ov, Int<kChunkV>{}, chunk_v, p.dv_ptr, p.dv_add, kDV, 1.f);
  }
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    mlstm_bwd_sm90_kernel(CUTE_GRID_CONSTANT typename Traits::Params const params) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using SharedStorage = typename Traits::SharedStorage;
  using MainloopPipeline = typename Traits::MainloopPipeline;
  extern __shared__ __align__(1024) char smem_buf[];
  SharedStorage& storage = *reinterpret_cast<SharedStorage*>(smem_buf);
  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int warp_group_idx = cutlass::canonical_warp_group_idx();

  if (warp_idx == 0 && cute::elect_one_sync()) {
    cute::prefetch_tma_descriptor(params.tma_xqk.get_tma_descriptor());
    cute::prefetch_tma_descriptor(params.tma_xv.get_tma_descriptor());
    cute::prefetch_tma_descriptor(params.tma_yqk.get_tma_descriptor());
    cute::prefetch_tma_descriptor(params.tma_yv.get_tma_descriptor());
  }
  if (threadIdx.x == 0) storage.barrier_x.init(/*arrive_count=*/1);

  typename MainloopPipeline::Params pipeline_params;
  pipeline_params.transaction_bytes = Traits::kTmaBytesY;
  pipeline_params.role = warp_group_idx == 0 ? MainloopPipeline::ThreadCategory::Producer
                                             : MainloopPipeline::ThreadCategory::Consumer;
  pipeline_params.is_leader = threadIdx.x == 0;
  pipeline_params.num_consumers = Traits::kNumMmaThreads;
  MainloopPipeline pipeline(storage.pipeline, pipeline_params, Shape<_1, _1, _1>{});
  __syncthreads();

  const BwdTile tile = bwd_tile<Traits>(params.p);
  if (warp_group_idx == 0) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (threadIdx.x == 0) bwd_load<Traits>(params, storage, pipeline, tile);
  } else {
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    bwd_consume<Traits>(params, storage, pipeline, tile, static_cast<int>(threadIdx.x) - 128);
  }
#endif
}

}  // namespace xlstm_sm90
