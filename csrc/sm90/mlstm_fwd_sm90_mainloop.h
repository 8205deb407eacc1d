// Mainloop of the sm_90a family: the producer (one thread of the producer
// warpgroup) streams Q once and K/V tiles through a kStages-deep TMA pipeline; each
// consumer warpgroup (64 query rows) runs, per causal key tile,
//   S  = Q K^T                                   (SS WGMMA, fp32 accumulators)
//   logD_tj = (F_t - F_j0) - (F_j - F_j0 - i_j)  (the fp64 offset trick of sm75)
//   P  = exp(logD - m_t) * S / sqrt(DQK);  b += rowsum P
//   O += P V                                     (RS WGMMA: P straight from registers)
// The stabilizer m_t = max(F_t + m_0, max_{j<=t} logD_tj) depends on the gates only:
// gate_prefix (csrc/cuda/gate_prefix.cu) computes it before the launch
// (MlstmForwardParams::m_rows_ready), so there is no running max and no rescaling of O
// and b per tile. O, b start at
// exp(F_t + m_0 - m_t) times q̂ C_0 (WGMMAs on C_0 as 16-bit hi + lo parts, streamed
// through the V stages ahead of the key tiles) and q̂·n_0 (fp32 FMAs).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/pipeline/pipeline.hpp>

#include <cmath>

#include "mlstm_fwd_sm90_kernel_traits.h"
#include "sm90_utils.h"

namespace xlstm_sm90 {

using namespace cute;

// Which output tile a CTA owns.
struct TileCoord {
  int64_t b, h, bh;     // batch, head, b * NH + h
  int64_t row0;         // first query row
  int m_block, dv_block;
  int n_block_max;      // causal key tiles 0 .. n_block_max - 1
};

template <class Traits>
struct CollectiveMainloop {
  using Element = typename Traits::Element;
  using Params = typename Traits::Params;
  using SharedStorage = typename Traits::SharedStorage;
  using MainloopPipeline = typename Traits::MainloopPipeline;
  using PipelineState = typename Traits::PipelineState;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kBlockDV = Traits::kBlockDV;
  static constexpr int kDQK = Traits::kDQK;
  // log2(1 / sqrt(DQK)), folded into the exponent of the decay so that P comes out
  // scaled for free.
  static constexpr float kLog2Scale = kDQK == 64 ? -3.f : (kDQK == 128 ? -3.5f : -4.f);
  static_assert(kDQK == 64 || kDQK == 128 || kDQK == 256);
  static constexpr float kLog2e = 1.4426950408889634f;
  // Named barriers (0 is __syncthreads): 1, 2 = per-warpgroup column terms;
  // 3, 4 = the ping-pong scheduler of consumer warpgroups 0 and 1.
  static constexpr uint32_t kBarrierColumnsWG0 = 1;
  static constexpr uint32_t kBarrierSchedWG0 = 3;

  // Producer of one work item: a single thread issues every TMA (Q, then the K/V
  // tiles through the pipeline, whose state `write` runs on across items). The caller
  // has made sure the consumers are done reading the previous item's Q.
  CUTLASS_DEVICE static void load(Params const& params, SharedStorage& storage,
                                  MainloopPipeline& pipeline, PipelineState& write,
                                  TileCoord const& tile) {
    const MlstmForwardParams& p = params.p;
    const auto shape_qk = make_shape(static_cast<int>(p.S), static_cast<int>(kDQK), static_cast<int>(p.NH),
                                     static_cast<int>(p.B));
    const auto shape_v = make_shape(static_cast<int>(p.S), p.DV, static_cast<int>(p.NH),
                                    static_cast<int>(p.B));
    Tensor mQ = params.tma_q.get_tma_tensor(shape_qk);
    Tensor mK = params.tma_k.get_tma_tensor(shape_qk);
    Tensor mV = params.tma_v.get_tma_tensor(shape_v);
    const int b = static_cast<int>(tile.b), h = static_cast<int>(tile.h);
    Tensor gQ = local_tile(mQ(_, _, h, b), Shape<Int<kBlockM>, Int<kDQK>>{},
                           make_coord(tile.m_block, _0{}));                      // (M, DQK)
    Tensor gK = local_tile(mK(_, _, h, b), Shape<Int<kBlockN>, Int<kDQK>>{},
                           make_coord(_, _0{}));                                 // (N, DQK, n)
    Tensor gV = local_tile(mV(_, _, h, b), Shape<Int<kBlockN>, Int<kBlockDV>>{},
                           make_coord(_, tile.dv_block));                        // (N, DV, n)
    Tensor sQ = make_tensor(make_smem_ptr(storage.smem_q.data()), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(storage.smem_k.data()), typename Traits::SmemLayoutK{});
    Tensor sV = make_tensor(make_smem_ptr(storage.smem_v.data()), typename Traits::SmemLayoutV{});
    auto [tQgQ, tQsQ] = tma_partition(params.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ),
                                      group_modes<0, 2>(gQ));
    auto [tKgK, tKsK] = tma_partition(params.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK),
                                      group_modes<0, 2>(gK));
    auto [tVgV, tVsV] = tma_partition(params.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sV),
                                      group_modes<0, 2>(gV));

    storage.barrier_q.arrive_and_expect_tx(Traits::kTmaBytesQ);
    copy(params.tma_q.with(reinterpret_cast<uint64_t&>(storage.barrier_q), 0), tQgQ, tQsQ);
    if (p.c0_lowp_ptr != nullptr) {
      // C0 first, kBlockN of its (hi, lo) rows per stage in the V slot. The K slot gets
      // key tile 0 as well, unused, so that every stage carries the same kTmaBytesKV.
      Tensor mC = params.tma_c.get_tma_tensor(
          make_shape(static_cast<int>(Traits::kStateRowsTotal), p.DV, static_cast<int>(p.NH),
                     static_cast<int>(p.B)));
      Tensor gC = local_tile(mC(_, _, h, b), Shape<Int<kBlockN>, Int<kBlockDV>>{},
                             make_coord(_, tile.dv_block));                      // (N, DV, n)
      auto [tCgC, tCsC] = tma_partition(params.tma_c, _0{}, Layout<_1>{}, group_modes<0, 2>(sV),
                                        group_modes<0, 2>(gC));
      CUTLASS_PRAGMA_UNROLL
      for (int piece = 0; piece < Traits::kStatePieces; ++piece) {
        pipeline.producer_acquire(write);
        uint64_t* full = pipeline.producer_get_barrier(write);
        copy(params.tma_k.with(*full, 0), tKgK(_, 0), tKsK(_, write.index()));
        copy(params.tma_c.with(*full, 0), tCgC(_, piece), tCsC(_, write.index()));
        ++write;
      }
    }
#pragma unroll 1
    for (int n = 0; n < tile.n_block_max; ++n) {
      pipeline.producer_acquire(write);
      uint64_t* full = pipeline.producer_get_barrier(write);
      copy(params.tma_k.with(*full, 0), tKgK(_, n), tKsK(_, write.index()));
      copy(params.tma_v.with(*full, 0), tVgV(_, n), tVsV(_, write.index()));
      ++write;
    }
  }

  // Consumer of one work item whose Q has arrived: thread_idx in [0, kNumMmaThreads).
  // Leaves the unnormalized O, the rows' stabilizer m and this thread's partial sums of
  // b in registers. `read` (pipeline) and `step` (key tiles consumed so far, the parity
  // of the column-term buffers) run on across items. Arrives on barrier_q_empty as
  // soon as the last S WGMMA has read Q, so the next item's Q loads under this item's
  // last tile and epilogue.
  template <class FrgO>
  CUTLASS_DEVICE static void mma(Params const& params, SharedStorage& storage,
                                 MainloopPipeline& pipeline, PipelineState& read, int& step,
                                 TileCoord const& tile, int thread_idx, FrgO& tOrO,
                                 float (&m_run)[2], float (&b_run)[2]) {
    const MlstmForwardParams& p = params.p;
    const int64_t S = p.S;
    const int wg = thread_idx / 128, tid_wg = thread_idx % 128, lane = thread_idx % 32;
    typename Traits::TiledMmaS tiled_mma_s;
    typename Traits::TiledMmaO tiled_mma_o;
    auto thr_mma_s = tiled_mma_s.get_thread_slice(thread_idx);
    auto thr_mma_o = tiled_mma_o.get_thread_slice(thread_idx);

    Tensor sQ = make_tensor(make_smem_ptr(storage.smem_q.data()), typename Traits::SmemLayoutQ{});
    Tensor sK = make_tensor(make_smem_ptr(storage.smem_k.data()), typename Traits::SmemLayoutK{});
    Tensor sVt = make_tensor(make_smem_ptr(storage.smem_v.data()), typename Traits::SmemLayoutVt{});
    Tensor tSrQ = thr_mma_s.partition_fragment_A(sQ);   // (MMA, 1, DQK/16) descriptors
    Tensor tSrK = thr_mma_s.partition_fragment_B(sK);   // (MMA, 1, DQK/16, stage)
    Tensor tOrV = thr_mma_o.partition_fragment_B(sVt);  // (MMA, 1, N/16, stage)
    Tensor tSrS = partition_fragment_C(tiled_mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
    Tensor tSrS_rc = make_tensor(tSrS.data(), acc_layout_rowcol(tSrS.layout()));  // (2, N/4)
    Tensor tOrO_rc = make_tensor(tOrO.data(), acc_layout_rowcol(tOrO.layout()));  // (2, DV/4)
    // (row, column) of every accumulator element of this thread, tile-local.
    Tensor tScS = thr_mma_s.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
    Tensor tScS_rc = make_tensor(tScS.data(), acc_layout_rowcol(tScS.layout()));
    static_assert(decltype(size<0>(tSrS_rc))::value == 2 && decltype(size<0>(tOrO_rc))::value == 2);

    const float* igate = p.igate_ptr + tile.bh * S;
    const double* fcum = p.fcum_ptr + tile.bh * S;
    int row_local[2];
    int64_t t_row[2];
    double f_row[2];
    CUTLASS_PRAGMA_UNROLL
    for (int x = 0; x < 2; ++x) {
      row_local[x] = get<0>(tScS_rc(x, 0));
      t_row[x] = tile.row0 + row_local[x];
      // Rows past S repeat row S - 1 (same F, same visible columns): finite, not stored.
      const int64_t t = t_row[x] < S ? t_row[x] : S - 1;
      f_row[x] = fcum[t];
      m_run[x] = p.m_rows_ptr[tile.bh * S + t];
      b_run[x] = 0.f;
    }
    clear(tOrO);

    // Tiles wholly below the diagonal of the CTA's first row and inside S need no
    // mask. CTA-uniform on purpose (not per warpgroup): ptxas then sees a uniform
    // branch and keeps the WGMMAs asynchronous.
    auto tile_masked = [&](int n) {
      const int64_t j_last = static_cast<int64_t>(n) * kBlockN + kBlockN - 1;
      return j_last > tile.row0 || j_last >= S;
    };

    // Column terms of the first key tile, loaded while Q arrives.
    double pf_f = 0., pf_ref = 0.;
    float pf_i = 0.f;
    auto prefetch_columns = [&](int n) {
      const int64_t j0 = static_cast<int64_t>(n) * kBlockN, j = j0 + tid_wg;
      if (tid_wg < kBlockN) {
        pf_ref = fcum[j0];
        if (j < S) {
          pf_f = fcum[j];
          pf_i = igate[j];
        }
      }
    };
    prefetch_columns(0);

    // Initial state: O = w0 q̂ C0 and b = w0 q̂ · n0 with the state column's weight
    // w0 = exp(F_t + m0 - m_t) <= 1. C0 arrives pre-scaled (scale / factor) as hi + lo
    // rows in kStatePieces stages of the pipeline; state row r multiplies Q's column
    // r % DQK.
    float w0[2];
    {
      const double m0 = p.has_m0 ? p.m0_ptr[tile.bh] : 0.;
      CUTLASS_PRAGMA_UNROLL
      for (int x = 0; x < 2; ++x) {
        w0[x] = exp2f(static_cast<float>(f_row[x] + m0 - m_run[x]) * kLog2e);
      }
    }
    if (p.c0_lowp_ptr != nullptr) {
      typename Traits::TiledMmaC tiled_mma_c;
      auto thr_mma_c = tiled_mma_c.get_thread_slice(thread_idx);
      Tensor tCrQ = thr_mma_c.partition_fragment_A(sQ);   // (MMA, 1, DQK/16)
      Tensor tCrC = thr_mma_c.partition_fragment_B(sVt);  // (MMA, 1, N/16, stage)
      tiled_mma_c.accumulate_ = GMMA::ScaleOut::One;  // O was cleared
      CUTLASS_PRAGMA_UNROLL
      for (int piece = 0; piece < Traits::kStatePieces; ++piece) {
        pipeline.consumer_wait(read);
        warpgroup_fence_operand(tOrO);
        warpgroup_arrive();
        CUTLASS_PRAGMA_UNROLL
        for (int k = 0; k < kBlockN / 16; ++k) {
          const int row = piece * kBlockN + k * 16;  // compile-time after unrolling
          if (row < Traits::kStateRowsTotal) {
            cute::gemm(tiled_mma_c, tCrQ(_, _, (row % kDQK) / 16), tCrC(_, _, k, read.index()),
                       tOrO);
          }
        }
        warpgroup_commit_batch();
        warpgroup_wait<0>();
        warpgroup_fence_operand(tOrO);
        pipeline.consumer_release(read);
        ++read;
      }
      const float factor = p.c0_factor_ptr != nullptr ? p.c0_factor_ptr[tile.bh] : 1.f;
      CUTLASS_PRAGMA_UNROLL
      for (int x = 0; x < 2; ++x) {
        CUTLASS_PRAGMA_UNROLL
        for (int c = 0; c < size<1>(tOrO_rc); ++c) tOrO_rc(x, c) *= w0[x] * factor;
      }
    }
    if (p.has_n0) {
      // Each lane of the quad takes every 4th d; the quad sum in the epilogue adds them.
      const float scale = p.scale;
      const float* n0 = p.n0_ptr + tile.bh * kDQK;
      for (int d = lane % 4; d < kDQK; d += 4) {
        CUTLASS_PRAGMA_UNROLL
        for (int x = 0; x < 2; ++x) {
          b_run[x] = fmaf(static_cast<float>(sQ(row_local[x], d)) * scale, n0[d], b_run[x]);
        }
      }
      CUTLASS_PRAGMA_UNROLL
      for (int x = 0; x < 2; ++x) b_run[x] *= w0[x];
    }

    // Per key tile, before its WGMMAs: the column terms go to this warpgroup's smem
    // buffer n % 2 (the named barrier of tile n + 1 orders its reuse at tile n + 2),
    // then the per-row exponent offsets. They depend on positions and gates only, not
    // on S. All divergent work lives here, where no WGMMA is in flight (a divergent
    // branch while one is pending makes ptxas serialize the WGMMAs).
    //
    // Below the diagonal (unmasked tiles) the decay factors into a row part and a
    // column part, both <= 1 with cmin = min_j col_j of the tile:
    //   exp(row_off - col_j - m) = exp(row_off - cmin - m) * exp(cmin - col_j),
    // so the exponentials are one per row (row_fac) and one per column (each column's
    // factor replaces its term in smem after the first barrier) instead of one per
    // element. A factor that flushes to zero
    // bounds an exact weight that is itself below 2^-126 of the row's maximum.
    // Diagonal tiles keep one exponential per element (row_exp): there cmin may come
    // from a masked column, and the row factor would overflow.
    float row_exp[2], row_fac[2];
    // Diagonal tile n: column cl (tile-local) is visible to row x iff cl <= limit
    // (32-bit compares; columns at or past S have an infinite column term and give 0).
    auto visible_limit = [&](int n, int x) {
      const int64_t d = t_row[x] - static_cast<int64_t>(n) * kBlockN;
      return d < 0 ? -1 : (d > kBlockN ? kBlockN : static_cast<int>(d));
    };
    auto prepare_tile = [&](int n) {
      const int buf = (step + n) & 1;
      const int64_t j0 = static_cast<int64_t>(n) * kBlockN;
      float my_col = INFINITY;  // this thread's column term (tid_wg < kBlockN)
      if (tid_wg < kBlockN) {
        const float c = j0 + tid_wg < S ? static_cast<float>(pf_f - pf_ref) - pf_i : INFINITY;
        my_col = c;
        storage.col[wg][buf][tid_wg] = c;
        float mn = c;
        CUTLASS_PRAGMA_UNROLL
        for (int off = 16; off > 0; off /= 2) mn = fminf(mn, __shfl_xor_sync(0xffffffff, mn, off));
        if (lane == 0) storage.col_min[wg][buf][tid_wg / 32] = mn;
        if (tid_wg == 0) storage.f_ref[wg][buf] = pf_ref;
      }
      named_barrier_sync(kBarrierColumnsWG0 + wg, 128);
      // Next tile's gate loads, issued after the barrier so that it never waits on them.
      if (n + 1 < tile.n_block_max) prefetch_columns(n + 1);

      const double f_ref = storage.f_ref[wg][buf];
      float row_off[2];
      CUTLASS_PRAGMA_UNROLL
      for (int x = 0; x < 2; ++x) row_off[x] = static_cast<float>(f_row[x] - f_ref);
      if (!tile_masked(n)) {
        // Every column is visible: row_off - cmin <= m_t, so row_fac <= 1.
        float cmin = storage.col_min[wg][buf][0];
        CUTLASS_PRAGMA_UNROLL
        for (int w = 1; w < kBlockN / 32; ++w) cmin = fminf(cmin, storage.col_min[wg][buf][w]);
        CUTLASS_PRAGMA_UNROLL
        for (int x = 0; x < 2; ++x) {
          row_fac[x] = exp2f((row_off[x] - cmin - m_run[x]) * kLog2e + kLog2Scale);
        }
        // Every thread is past the first barrier: no one reads the raw terms any more.
        // The factors are read after the warpgroup's next bar.sync: the ping-pong
        // scheduler barrier before the S WGMMA (all 128 threads of this warpgroup sync
        // on it), or this one without ping-pong.
        if (tid_wg < kBlockN) storage.col[wg][buf][tid_wg] = exp2f((cmin - my_col) * kLog2e);
        if constexpr (Traits::kSchedule == Schedule::kSerial) {
          named_barrier_sync(kBarrierColumnsWG0 + wg, 128);
        }
      } else {
        CUTLASS_PRAGMA_UNROLL
        for (int x = 0; x < 2; ++x) row_exp[x] = (row_off[x] - m_run[x]) * kLog2e + kLog2Scale;
      }
    };
    // S -> P in place (fp32), b += rowsum P. Two straight-line instances, picked by the
    // CTA-uniform tile_masked (so either may run while the previous tile's P V WGMMA is
    // in flight): a runtime mask flag inside the loop gets if-converted by the compiler
    // into per-element compares and selects on every tile.
    auto softmax_tile = [&](int n, auto masked_c) {
      constexpr bool kMasked = decltype(masked_c)::value;
      const float* col = storage.col[wg][(step + n) & 1];  // terms, or factors if unmasked
      if constexpr (kMasked) {
        const int lim[2] = {visible_limit(n, 0), visible_limit(n, 1)};
        CUTLASS_PRAGMA_UNROLL
        for (int c = 0; c < size<1>(tSrS_rc); c += 2) {
          const int cl = get<1>(tScS_rc(0, c));
          const float2 cv = *reinterpret_cast<const float2*>(col + cl);
          const float cv2[2] = {cv.x, cv.y};
          CUTLASS_PRAGMA_UNROLL
          for (int x = 0; x < 2; ++x) {
            CUTLASS_PRAGMA_UNROLL
            for (int e = 0; e < 2; ++e) {
              float pv = tSrS_rc(x, c + e) * exp2f(fmaf(cv2[e], -kLog2e, row_exp[x]));
              pv = cl + e <= lim[x] ? pv : 0.f;
              tSrS_rc(x, c + e) = pv;
              b_run[x] += pv;
            }
          }
        }
      } else {
        // P = (S * col factor) * row factor; b += row factor * sum(S * col factor),
        // summed in two interleaved partial sums per row (shorter add chains).
        float part[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
        CUTLASS_PRAGMA_UNROLL
        for (int c = 0; c < size<1>(tSrS_rc); c += 2) {
          const int cl = get<1>(tScS_rc(0, c));
          const float2 cf = *reinterpret_cast<const float2*>(col + cl);
          const float cf2[2] = {cf.x, cf.y};
          CUTLASS_PRAGMA_UNROLL
          for (int x = 0; x < 2; ++x) {
            CUTLASS_PRAGMA_UNROLL
            for (int e = 0; e < 2; ++e) {
              const float sc = tSrS_rc(x, c + e) * cf2[e];
              part[x][e] += sc;
              tSrS_rc(x, c + e) = sc * row_fac[x];
            }
          }
        }
        CUTLASS_PRAGMA_UNROLL
        for (int x = 0; x < 2; ++x) b_run[x] = fmaf(row_fac[x], part[x][0] + part[x][1], b_run[x]);
      }
    };
    auto softmax = [&](int n) {
      if (tile_masked(n)) softmax_tile(n, cute::true_type{});
      else softmax_tile(n, cute::false_type{});
    };
    Tensor tOrP = make_tensor<Element>(acc_layout_as_a_operand(tSrS.layout()));
    auto convert_p = [&]() {
      constexpr int kN = decltype(size(tSrS))::value;
      cutlass::NumericArrayConverter<Element, float, kN> convert;
      *reinterpret_cast<cutlass::Array<Element, kN>*>(tOrP.data()) =
          convert(*reinterpret_cast<const cutlass::Array<float, kN>*>(tSrS.data()));
    };

    const int n_last = tile.n_block_max - 1;
    auto release_q_after = [&](int n) {
      if (n == n_last) storage.barrier_q_empty.arrive();
    };

    // Ping-pong between the two consumer warpgroups (FA3's warp scheduler barrier):
    // each issues its WGMMAs only after the other one has issued, so that one
    // warpgroup's exponentials overlap the other's tensor-core work. Every warpgroup
    // syncs and arrives once per issue point; warpgroup 0 goes first.
    constexpr bool kPingPong = Traits::kSchedule != Schedule::kSerial;
    auto scheduler_sync = [&]() {
      if constexpr (kPingPong) named_barrier_sync(kBarrierSchedWG0 + wg, 256);
    };
    auto scheduler_arrive = [&]() {
      if constexpr (kPingPong) named_barrier_arrive(kBarrierSchedWG0 + (1 - wg), 256);
    };
    if (kPingPong && wg == 0) named_barrier_arrive(kBarrierSchedWG0, 256);

    if constexpr (Traits::kSchedule == Schedule::kOverlapPingPong) {
      // Tile 0, then a software pipeline (FA3's intra-warpgroup overlap): the WGMMA of
      // S_n and that of P_{n-1} V_{n-1} are issued back to back, and the exponentials of
      // tile n run while the tensor cores still work on P_{n-1} V_{n-1}.
      prepare_tile(0);
      pipeline.consumer_wait(read);
      scheduler_sync();
      wgmma_issue</*kZeroInit=*/true>(tiled_mma_s, tSrQ, tSrK(_, _, _, read.index()), tSrS);
      scheduler_arrive();
      warpgroup_wait<0>();
      warpgroup_fence_operand(tSrS);
      release_q_after(0);
      softmax(0);
      convert_p();
      PipelineState read_prev = read;
      ++read;
      for (int n = 1; n < tile.n_block_max; ++n) {
        prepare_tile(n);
        pipeline.consumer_wait(read);
        scheduler_sync();
        wgmma_issue</*kZeroInit=*/true>(tiled_mma_s, tSrQ, tSrK(_, _, _, read.index()), tSrS);
        wgmma_issue</*kZeroInit=*/false>(tiled_mma_o, tOrP, tOrV(_, _, _, read_prev.index()), tOrO);
        scheduler_arrive();
        warpgroup_wait<1>();  // S_n done, P_{n-1} V_{n-1} may still run
        warpgroup_fence_operand(tSrS);
        release_q_after(n);
        softmax(n);
        warpgroup_wait<0>();
        warpgroup_fence_operand(tOrO);
        pipeline.consumer_release(read_prev);  // K_{n-1} and V_{n-1} are consumed
        convert_p();
        read_prev = read;
        ++read;
      }
      scheduler_sync();
      wgmma_issue</*kZeroInit=*/false>(tiled_mma_o, tOrP, tOrV(_, _, _, read_prev.index()), tOrO);
      scheduler_arrive();
      warpgroup_wait<0>();
      warpgroup_fence_operand(tOrO);
      pipeline.consumer_release(read_prev);
    } else {
      // Serial schedules: S, softmax, P V one after the other (ping-pong, if on, orders
      // the S WGMMAs of the two warpgroups).
      for (int n = 0; n < tile.n_block_max; ++n) {
        prepare_tile(n);
        pipeline.consumer_wait(read);
        scheduler_sync();
        wgmma_issue</*kZeroInit=*/true>(tiled_mma_s, tSrQ, tSrK(_, _, _, read.index()), tSrS);
        scheduler_arrive();
        warpgroup_wait<0>();
        warpgroup_fence_operand(tSrS);
        release_q_after(n);
        softmax(n);
        convert_p();
        wgmma_issue</*kZeroInit=*/false>(tiled_mma_o, tOrP, tOrV(_, _, _, read.index()), tOrO);
        warpgroup_wait<0>();
        warpgroup_fence_operand(tOrO);
        pipeline.consumer_release(read);
        ++read;
      }
    }
    // Take warpgroup 1's last arrival so that no named barrier is left half-arrived.
    if (kPingPong && wg == 0) scheduler_sync();
    step += tile.n_block_max;
  }
};

}  // namespace xlstm_sm90
