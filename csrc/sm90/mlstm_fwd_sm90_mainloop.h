// Mainloop of the sm_90a family: the producer (one warp of the producer warpgroup;
// lane 0 issues the TMAs) streams Q once and K/V tiles through a kStages-deep TMA
// pipeline, and with each K/V stage the key tile's column terms (StageColumns); each
// consumer warpgroup (64 query rows) runs, per causal key tile,
//   S  = Q K^T                                   (SS WGMMA, fp32 accumulators)
//   logD_tj = (F_t - F_j0) - (F_j - F_j0 - i_j)  (row offset minus column term)
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
  // Named barriers (0 is __syncthreads): 1, 2 = the ping-pong scheduler of consumer
  // warpgroups 0 and 1.
  static constexpr uint32_t kBarrierSchedWG0 = 1;
  // Arrivals that fill a K/V stage besides its TMA bytes: lane 0's expect-tx and one
  // per producer lane once its column terms are in shared memory.
  static constexpr int kStageProducerArrivals = 1 + 32;

  // Whether key tile n has entries above the diagonal of the CTA's first row or past S
  // (then P needs a mask). CTA-uniform on purpose (not per warpgroup): ptxas then sees
  // a uniform branch and keeps the WGMMAs asynchronous.
  CUTLASS_DEVICE static bool key_tile_masked(TileCoord const& tile, int n, int64_t S) {
    const int64_t j_last = static_cast<int64_t>(n) * kBlockN + kBlockN - 1;
    return j_last > tile.row0 || j_last >= S;
  }

  // Column terms of key tile n: lane l takes keys j0 + l + 32 k. Loaded before the
  // producer waits for a free stage, so that the loads fly during the wait.
  static constexpr int kColsPerLane = kBlockN / 32;
  struct ColumnLoads {
    double f_ref;   // F_j0
    double f_item;  // F_row0
    double f[kColsPerLane];
    float i[kColsPerLane];
    int n_valid;  // keys of the tile before S
  };
  CUTLASS_DEVICE static ColumnLoads load_columns(MlstmForwardParams const& p,
                                                 TileCoord const& tile, int n, int lane) {
    const double* fcum = p.fcum_ptr + tile.bh * p.S;
    const float* igate = p.igate_ptr + tile.bh * p.S;
    const int64_t j0 = static_cast<int64_t>(n) * kBlockN;
    ColumnLoads c;
    c.f_ref = fcum[j0];
    c.f_item = fcum[tile.row0];
    c.n_valid = p.S - j0 < kBlockN ? static_cast<int>(p.S - j0) : kBlockN;
    CUTLASS_PRAGMA_UNROLL
    for (int k = 0; k < kColsPerLane; ++k) {
      const int64_t j = j0 + lane + 32 * k;
      c.f[k] = j < p.S ? fcum[j] : 0.;
      c.i[k] = j < p.S ? igate[j] : 0.f;
    }
    return c;
  }
  // The decay factors into a row part and a column part with cmin = min_j c_j of the
  // tile:
  //   exp(row_off - c_j - m) = exp(row_off - cmin - m) * exp(cmin - c_j),
  // so the consumers take one exponential per row and the producer one per column.
  // Below the diagonal both factors are <= 1 (m bounds every visible logD), and a
  // column factor that flushes to zero bounds an exact weight that is itself below
  // 2^-126 of the row's maximum. On a masked tile cmin may come from a column a row
  // does not see, so the row factor is bounded only by the tile's spread
  // max_j c_j - min_j c_j (over keys before S): up to kFactorSpread the row factor
  // stays below e^64 and the column factors normal floats; past it (extreme gates) the
  // stage keeps the terms and the consumers take one exponential per element.
  static constexpr float kFactorSpread = 64.f;
  CUTLASS_DEVICE static void store_columns(ColumnLoads const& c, bool masked,
                                           StageColumns<kBlockN>& cols, int lane) {
    float term[kColsPerLane];
    float cmin = INFINITY, cmax = -INFINITY;
    CUTLASS_PRAGMA_UNROLL
    for (int k = 0; k < kColsPerLane; ++k) {
      // Past S the term is +inf: no weight (such a tile is always masked).
      const bool valid = lane + 32 * k < c.n_valid;
      term[k] = valid ? static_cast<float>(c.f[k] - c.f_ref) - c.i[k] : INFINITY;
      cmin = fminf(cmin, term[k]);
      cmax = fmaxf(cmax, valid ? term[k] : -INFINITY);
    }
    CUTLASS_PRAGMA_UNROLL
    for (int off = 16; off > 0; off /= 2) {
      cmin = fminf(cmin, __shfl_xor_sync(0xffffffff, cmin, off));
      cmax = fmaxf(cmax, __shfl_xor_sync(0xffffffff, cmax, off));
    }
    const bool factored = !masked || cmax - cmin <= kFactorSpread;
    CUTLASS_PRAGMA_UNROLL
    for (int k = 0; k < kColsPerLane; ++k) {
      cols.v[lane + 32 * k] = factored ? exp2f((cmin - term[k]) * kLog2e) : term[k];
    }
    if (lane == 0) {
      // F is non-increasing and j0 <= row0 + kBlockM, so |F_j0 - F_row0| and
      // |F_t - F_row0| (the consumer's half) are at most |F_t - F_j0| or one item's
      // span: the row offset F_t - F_j0 as their float difference costs at most about
      // three float roundings of it, with no fp64 work in the consumers' tile loop.
      cols.f_ref_rel = static_cast<float>(c.f_ref - c.f_item);
      cols.cmin = cmin;
      cols.factored = factored;
    }
  }

  // Producer of one work item, run by all lanes of the producer warp: lane 0 issues
  // every TMA (Q, then the K/V tiles through the pipeline, whose state `write` runs on
  // across items), every lane writes its column terms into the stage and arrives on the
  // stage's full barrier. The caller has made sure the consumers are done reading the
  // previous item's Q.
  CUTLASS_DEVICE static void load(Params const& params, SharedStorage& storage,
                                  MainloopPipeline& pipeline, PipelineState& write,
                                  TileCoord const& tile, int lane) {
    const MlstmForwardParams& p = params.p;
    const bool leader = lane == 0;
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

    if (leader) {
      storage.barrier_q.arrive_and_expect_tx(Traits::kTmaBytesQ);
      copy(params.tma_q.with(reinterpret_cast<uint64_t&>(storage.barrier_q), 0), tQgQ, tQsQ);
    }
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
        if (leader) {
          copy(params.tma_k.with(*full, 0), tKgK(_, 0), tKsK(_, write.index()));
          copy(params.tma_c.with(*full, 0), tCgC(_, piece), tCsC(_, write.index()));
        }
        cutlass::arch::ClusterBarrier::arrive(full);  // no column terms in state stages
        ++write;
      }
    }
#pragma unroll 1
    for (int n = 0; n < tile.n_block_max; ++n) {
      const ColumnLoads columns = load_columns(p, tile, n, lane);
      pipeline.producer_acquire(write);
      uint64_t* full = pipeline.producer_get_barrier(write);
      if (leader) {
        copy(params.tma_k.with(*full, 0), tKgK(_, n), tKsK(_, write.index()));
        copy(params.tma_v.with(*full, 0), tVgV(_, n), tVsV(_, write.index()));
      }
      store_columns(columns, key_tile_masked(tile, n, p.S), storage.cols[write.index()], lane);
      cutlass::arch::ClusterBarrier::arrive(full);  // releases this lane's column writes
      ++write;
    }
  }

  // Consumer of one work item whose Q has arrived: thread_idx in [0, kNumMmaThreads).
  // Leaves the unnormalized O, the rows' stabilizer m and this thread's partial sums of
  // b in registers. `read` (pipeline state) runs on across items. Arrives on
  // barrier_q_empty as soon as the last S WGMMA has read Q, so the next item's Q loads
  // under this item's last tile and epilogue.
  template <class FrgO>
  CUTLASS_DEVICE static void mma(Params const& params, SharedStorage& storage,
                                 MainloopPipeline& pipeline, PipelineState& read,
                                 TileCoord const& tile, int thread_idx, FrgO& tOrO,
                                 float (&m_run)[2], float (&b_run)[2]) {
    const MlstmForwardParams& p = params.p;
    const int64_t S = p.S;
    const int wg = thread_idx / 128, lane = thread_idx % 32;
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

    const double* fcum = p.fcum_ptr + tile.bh * S;
    int row_local[2];
    int64_t t_row[2];
    float f_row_rel[2];  // F_t - F_row0 (see store_columns)
    const double f_item = fcum[tile.row0];
    CUTLASS_PRAGMA_UNROLL
    for (int x = 0; x < 2; ++x) {
      row_local[x] = get<0>(tScS_rc(x, 0));
      t_row[x] = tile.row0 + row_local[x];
      // Rows past S repeat row S - 1 (same F, same visible columns): finite, not stored.
      const int64_t t = t_row[x] < S ? t_row[x] : S - 1;
      f_row_rel[x] = static_cast<float>(fcum[t] - f_item);
      m_run[x] = p.m_rows_ptr[tile.bh * S + t];
      b_run[x] = 0.f;
    }
    clear(tOrO);

    // Initial state: O = w0 q̂ C0 and b = w0 q̂ · n0 with the state column's weight
    // w0 = exp(F_t + m0 - m_t) <= 1. C0 arrives pre-scaled (scale / factor) as hi + lo
    // rows in kStatePieces stages of the pipeline; state row r multiplies Q's column
    // r % DQK.
    // F_t + m0 - m_t as (F_t - F_row0) + (F_row0 + m0) - m_t: the middle term rounded
    // once to fp32, no more than m_t's own rounding (it is of m_t's size where w0
    // matters), and no fp64 row value kept alive through the state's GEMMs.
    auto state_weights = [&](float (&w0)[2]) {
      const double m0 = p.has_m0 ? p.m0_ptr[tile.bh] : 0.;
      const float f_item_m0 = static_cast<float>(fcum[tile.row0] + m0);
      CUTLASS_PRAGMA_UNROLL
      for (int x = 0; x < 2; ++x) {
        w0[x] = exp2f((f_row_rel[x] + f_item_m0 - m_run[x]) * kLog2e);
      }
    };
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
      float w0[2];
      state_weights(w0);
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
      float w0[2];
      state_weights(w0);
      CUTLASS_PRAGMA_UNROLL
      for (int x = 0; x < 2; ++x) b_run[x] *= w0[x];
    }

    // Per key tile, issued right after its S WGMMA so that it runs under it: the per-row
    // exponent offsets from the stage's column terms (store_columns). They depend on
    // positions and gates only, not on S. Tiles with terms use row_exp, the row's part
    // of the per-element exponent; factored ones row_fac = exp(row_off - cmin - m).
    // Branch-free (both are computed): a branch while a WGMMA is in flight would make
    // ptxas serialize the WGMMAs. All fp32: session 13 measured the fp64 row offset
    // here (one DADD per row and tile) at 5 to 9 % of the kernel's time.
    float row_exp[2], row_fac[2];
    // Diagonal tile n: column cl (tile-local) is visible to row x iff cl <= limit
    // (32-bit compares; columns at or past S have an infinite column term and give 0).
    auto visible_limit = [&](int n, int x) {
      const int64_t d = t_row[x] - static_cast<int64_t>(n) * kBlockN;
      return d < 0 ? -1 : (d > kBlockN ? kBlockN : static_cast<int>(d));
    };
    auto prepare_tile = [&](StageColumns<kBlockN> const& cols) {
      const float f_ref_rel = cols.f_ref_rel;
      const float cmin_log2 = cols.cmin * kLog2e;
      CUTLASS_PRAGMA_UNROLL
      for (int x = 0; x < 2; ++x) {
        const float row_off = f_row_rel[x] - f_ref_rel;
        row_exp[x] = (row_off - m_run[x]) * kLog2e + kLog2Scale;
        // Clamped: on a masked tile a row that sees none of the tile's keys has no
        // bound on its factor (its P entries are selected to 0 and its b sum is 0; the
        // clamp keeps 0 * factor from becoming NaN).
        row_fac[x] = exp2f(fminf(row_exp[x] - cmin_log2, 126.f));
      }
    };
    // S -> P in place (fp32), b += rowsum P. Three straight-line instances, picked by the
    // CTA-uniform key_tile_masked and the stage's `factored` (so any may run while the
    // previous tile's P V WGMMA is in flight): a runtime mask flag inside the loop gets
    // if-converted by the compiler into per-element compares and selects on every tile.
    enum TileKind { kUnmasked, kMaskedFactors, kMaskedTerms };
    auto softmax_tile = [&](int n, float const* col, auto kind_c) {
      constexpr TileKind kKind = static_cast<TileKind>(decltype(kind_c)::value);
      if constexpr (kKind == kMaskedTerms) {
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
        // summed in two interleaved partial sums per row (shorter add chains). On a
        // masked tile the mask applies to S * col factor, before the row factor (which
        // may be huge for a row that sees no key of the tile).
        constexpr bool kMasked = kKind == kMaskedFactors;
        int lim[2] = {kBlockN, kBlockN};
        if constexpr (kMasked) {
          lim[0] = visible_limit(n, 0);
          lim[1] = visible_limit(n, 1);
        }
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
              float sc = tSrS_rc(x, c + e) * cf2[e];
              if constexpr (kMasked) sc = cl + e <= lim[x] ? sc : 0.f;
              part[x][e] += sc;
              tSrS_rc(x, c + e) = sc * row_fac[x];
            }
          }
        }
        CUTLASS_PRAGMA_UNROLL
        for (int x = 0; x < 2; ++x) b_run[x] = fmaf(row_fac[x], part[x][0] + part[x][1], b_run[x]);
      }
    };
    auto softmax = [&](int n, int stage) {
      const float* col = storage.cols[stage].v;
      if (!key_tile_masked(tile, n, S)) softmax_tile(n, col, cute::Int<kUnmasked>{});
      else if (storage.cols[stage].factored) softmax_tile(n, col, cute::Int<kMaskedFactors>{});
      else softmax_tile(n, col, cute::Int<kMaskedTerms>{});
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
      pipeline.consumer_wait(read);
      scheduler_sync();
      wgmma_issue</*kZeroInit=*/true>(tiled_mma_s, tSrQ, tSrK(_, _, _, read.index()), tSrS);
      scheduler_arrive();
      prepare_tile(storage.cols[read.index()]);
      warpgroup_wait<0>();
      warpgroup_fence_operand(tSrS);
      release_q_after(0);
      softmax(0, read.index());
      convert_p();
      PipelineState read_prev = read;
      ++read;
      for (int n = 1; n < tile.n_block_max; ++n) {
        pipeline.consumer_wait(read);
        scheduler_sync();
        wgmma_issue</*kZeroInit=*/true>(tiled_mma_s, tSrQ, tSrK(_, _, _, read.index()), tSrS);
        wgmma_issue</*kZeroInit=*/false>(tiled_mma_o, tOrP, tOrV(_, _, _, read_prev.index()), tOrO);
        scheduler_arrive();
        prepare_tile(storage.cols[read.index()]);
        warpgroup_wait<1>();  // S_n done, P_{n-1} V_{n-1} may still run
        warpgroup_fence_operand(tSrS);
        release_q_after(n);
        softmax(n, read.index());
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
      //
      // Warpgroup 0 on the diagonal key tile (kBlockN == kBlockM, so the item's last tile
      // starts at its first row) sees only the tile's first kBlockN / 2 keys: its P is 0
      // past them (softmax's mask), and its P V runs over those keys only. (Its S WGMMA
      // as an N = kBlockN / 2 instruction into half of S's registers made ptxas
      // serialize every WGMMA of the kernel for lack of registers, C7511.)
      constexpr bool kHalfDiagonal = kBlockN == kBlockM;
      auto issue_pv_half = [&](int stage) {
        warpgroup_fence_operand(tOrP);
        warpgroup_fence_operand(tOrO);
        warpgroup_arrive();
        CUTLASS_PRAGMA_UNROLL
        for (int k = 0; k < size<2>(tOrP) / 2; ++k) {
          cute::gemm(tiled_mma_o, tOrP(_, _, k), tOrV(_, _, k, stage), tOrO);
        }
        warpgroup_commit_batch();
        warpgroup_fence_operand(tOrO);
        warpgroup_fence_operand(tOrP);
      };
      for (int n = 0; n < tile.n_block_max; ++n) {
        const bool half = kHalfDiagonal && wg == 0 && n == tile.n_block_max - 1;
        pipeline.consumer_wait(read);
        scheduler_sync();
        wgmma_issue</*kZeroInit=*/true>(tiled_mma_s, tSrQ, tSrK(_, _, _, read.index()), tSrS);
        scheduler_arrive();
        prepare_tile(storage.cols[read.index()]);
        warpgroup_wait<0>();
        warpgroup_fence_operand(tSrS);
        release_q_after(n);
        softmax(n, read.index());
        convert_p();
        if (half) issue_pv_half(read.index());
        else wgmma_issue</*kZeroInit=*/false>(tiled_mma_o, tOrP, tOrV(_, _, _, read.index()), tOrO);
        warpgroup_wait<0>();
        warpgroup_fence_operand(tOrO);
        pipeline.consumer_release(read);
        ++read;
      }
    }
    // Take warpgroup 1's last arrival so that no named barrier is left half-arrived.
    if (kPingPong && wg == 0) scheduler_sync();
  }
};

}  // namespace xlstm_sm90
