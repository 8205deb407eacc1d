// The sm_90a mLSTM backward kernel (kinds kDhu, kDQ, kDKV, kDK, kDV; see
// mlstm_bwd_sm90_kernel_traits.h). Work item: (output chunk, stationary tile of 128
// rows, batch*head). The kernel is persistent: one CTA per SM takes item blockIdx.x,
// then the next unclaimed one from an atomic counter (items are ordered longest first
// within a head, so dynamic claiming balances the SMs and keeps the items in flight
// on neighbouring heads, whose streamed tiles share L2). The producer warpgroup
// claims and loads the next item's stationary tile as soon as the consumers are done
// reading the current one, and streams the causal 64-row tiles of the other side
// through a two-stage TMA pipeline that runs on across items, so loads overlap the
// previous item's last steps and output stores. Each consumer warpgroup owns 64
// stationary rows and per streamed tile runs
//
//   S = X_qk Y_qk^T, dP = X_hv Y_hv^T          (SS WGMMA, fp32 accumulators)
//   weights w from the forward's statistics, dS (or P) in registers
//   out chunk += dS Y_chunk  (and P^T dH for dV)  (RS WGMMA)
//
// with the arithmetic of the sm80 backward (csrc/sm80/mlstm_bwd_kernel.h): log w = row
// term + column term (BwdLogWeights), masked elements selected to 0, never multiplied.
// Element (r, c) of a score tile is stationary row r, streamed row c: (t, j) for
// kDhu / kDQ, (j, t) for kDKV / kDK / kDV.
#pragma once

#include <cmath>
#include <cstdint>

#include <cute/arch/cluster_sm90.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/cutlass.h>
#include <cutlass/pipeline/pipeline.hpp>

#include "../cuda/normalizer_terms.h"
#include "../mlstm_log_weights.h"
#include "mlstm_bwd_sm90_kernel_traits.h"
#include "sm90_utils.h"

namespace xlstm_sm90 {

using namespace cute;

// Named barriers (0 is __syncthreads): 1, 2 = per-warpgroup scalar buffers; 3, 4 = the
// ping-pong scheduler of consumer warpgroups 0 and 1.
constexpr uint32_t kBarrierScalarsWG0 = 1;
constexpr uint32_t kBarrierSchedWG0 = 3;

// One work item.
struct BwdTile {
  int64_t b, h, bh;
  int m_block;       // stationary tile: rows [st0, st0 + kBlockM)
  int64_t st0;
  int out_slice;     // output chunk
  int n_first, n_last;  // streamed tiles n_first .. n_last (rows n * kBlockN ...)
};

// Work items: (p.S / kBlockM rounded up) * B * NH * kNumOutSlices. For the host's grid:
// the row pass over a subset of the sequences (p.row_pass_seqs) has at most as many.
template <class Traits>
CUTLASS_HOST_DEVICE int64_t bwd_num_work(const MlstmBackwardParams& p) {
  return Traits::kNumOutSlices * ((p.S + Traits::kBlockM - 1) / Traits::kBlockM) * p.B * p.NH;
}

// The items this launch works through: bwd_num_work, or for the row pass over a subset
// of the sequences, that many per listed sequence (the count in device memory).
template <class Traits>
CUTLASS_DEVICE int64_t bwd_num_work_listed(const MlstmBackwardParams& p) {
  if (Traits::kKind == BwdKind::kDhu && p.row_pass_seqs != nullptr) {
    return Traits::kNumOutSlices * ((p.S + Traits::kBlockM - 1) / Traits::kBlockM) *
           static_cast<int64_t>(*p.row_pass_count);
  }
  return bwd_num_work<Traits>(p);
}

// 32-bit index math (the host checks that the item count fits): the producer runs it
// within its 24 registers.
template <class Traits>
CUTLASS_DEVICE BwdTile bwd_tile(const MlstmBackwardParams& p, int work) {
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN;
  const int num_tiles = static_cast<int>((p.S + kBlockM - 1) / kBlockM);
  const int nh = static_cast<int>(p.NH);
  // Fastest: output chunk, then stationary tile (longest causal range first), then
  // batch*head: work items that run together share their streamed tiles in L2.
  int bid = work;
  BwdTile t;
  t.out_slice = bid % Traits::kNumOutSlices;
  bid /= Traits::kNumOutSlices;
  t.m_block = Traits::kRowStationary ? num_tiles - 1 - bid % num_tiles : bid % num_tiles;
  int bh = bid / num_tiles;
  if constexpr (Traits::kKind == BwdKind::kDhu) {
    if (p.row_pass_seqs != nullptr) bh = p.row_pass_seqs[bh];
  }
  t.bh = bh;
  t.b = bh / nh;
  t.h = bh % nh;
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

// The 16-bit state whose terms a kind forms on tensor cores (lowp null: none) and its
// range factor (null: 1): C for the row-stationary kinds (kDhu, kDQ), dC for the others.
struct BwdState {
  const void* lowp;
  const float* factor;
};
CUTLASS_HOST_DEVICE BwdState bwd_state(const MlstmBackwardParams& p, BwdKind kind) {
  return kind == BwdKind::kDhu || kind == BwdKind::kDQ ? BwdState{p.c_lowp, p.c_factor}
                                                       : BwdState{p.dc_lowp, p.dc_factor};
}

// The first state piece (kBlockN state rows) an item reads: 0 where it reads them all
// (see kStatePieces), else the first of its dq / dk chunk.
template <class Traits>
CUTLASS_DEVICE int bwd_first_state_piece(BwdTile const& tile) {
  if constexpr (Traits::kOutV || Traits::kStateDot) return 0;
  return (Traits::kFirstChunk + tile.out_slice) * Traits::kPiecesPerChunkQK;
}

// Producer of one work item: one thread issues every TMA (the stationary tiles, then
// the streamed tiles through the pipeline). The caller has made sure the consumers
// are done with the previous item's stationary tiles.
template <class Traits>
CUTLASS_DEVICE void bwd_load(typename Traits::Params const& params,
                             typename Traits::SharedStorage& storage,
                             typename Traits::MainloopPipeline& pipeline,
                             typename Traits::PipelineState& write, BwdTile const& tile) {
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

  const bool load_h = Traits::kFormsNormTerms && p.fwd_h_ptr != nullptr;
  storage.barrier_x.arrive_and_expect_tx(Traits::kTmaBytesX + (load_h ? Traits::kTmaBytesH : 0));
  uint64_t& bar_x = reinterpret_cast<uint64_t&>(storage.barrier_x);
  copy(params.tma_xqk.with(bar_x, 0), tXgXqk, tXsXqk);
  copy(params.tma_xv.with(bar_x, 0), tXgXv, tXsXv);
  if constexpr (Traits::kFormsNormTerms) {
    if (load_h) {  // the forward's h next to dh (rows past S arrive as zeros)
      Tensor gH = local_tile(params.tma_h.get_tma_tensor(shape_v)(_, _, h, b),
                             Shape<Int<kBlockM>, Int<kDV>>{}, make_coord(tile.m_block, _0{}));
      Tensor sH = make_tensor(make_smem_ptr(storage.smem_h.data()), typename Traits::SmemLayoutXv{});
      auto [tHgH, tHsH] = tma_partition(params.tma_h, _0{}, Layout<_1>{}, group_modes<0, 2>(sH),
                                        group_modes<0, 2>(gH));
      copy(params.tma_h.with(bar_x, 0), tHgH, tHsH);
    }
  }
  if constexpr (Traits::kStatePieces > 0) {
    if (bwd_state(p, Traits::kKind).lowp != nullptr) {
      // The state's pieces first, in the Y_v slots. The Y_qk slot gets the first
      // streamed tile as well, unused, so that every stage carries kTmaBytesY.
      Tensor gState = local_tile(params.tma_state.get_tma_tensor(make_shape(
                                     Traits::kStateParts * kDQK, kDV, static_cast<int>(p.NH),
                                     static_cast<int>(p.B)))(_, _, h, b),
                                 Shape<Int<kBlockN>, Int<kDV>>{}, make_coord(_, _0{}));
      auto [tSgS, tSsS] = tma_partition(params.tma_state, _0{}, Layout<_1>{},
                                        group_modes<0, 2>(sYv), group_modes<0, 2>(gState));
      const int first = bwd_first_state_piece<Traits>(tile);
      CUTLASS_PRAGMA_UNROLL
      for (int part = 0; part < Traits::kStateParts; ++part) {
        CUTLASS_PRAGMA_UNROLL
        for (int i = 0; i < Traits::kStatePieces; ++i) {
          pipeline.producer_acquire(write);
          uint64_t* full = pipeline.producer_get_barrier(write);
          copy(params.tma_yqk.with(*full, 0), tYgYqk(_, tile.n_first), tYsYqk(_, write.index()));
          copy(params.tma_state.with(*full, 0),
               tSgS(_, part * Traits::kPiecesPerPart + first + i), tSsS(_, write.index()));
          ++write;
        }
      }
    }
  }
  for (int n = tile.n_first; n <= tile.n_last; ++n) {
    pipeline.producer_acquire(write);
    uint64_t* full = pipeline.producer_get_barrier(write);
    copy(params.tma_yqk.with(*full, 0), tYgYqk(_, n), tYsYqk(_, write.index()));
    copy(params.tma_yv.with(*full, 0), tYgYv(_, n), tYsYv(_, write.index()));
    ++write;
  }
}

// Consumer warpgroups, one work item whose stationary tiles have arrived: thread_idx
// in [0, kNumMmaThreads); `step` counts this CTA's streamed tiles across items (the
// parity of the scalar buffers).
template <class Traits>
CUTLASS_DEVICE void bwd_consume(typename Traits::Params const& params,
                                typename Traits::SharedStorage& storage,
                                typename Traits::MainloopPipeline& pipeline,
                                typename Traits::PipelineState& read, BwdTile const& tile,
                                int thread_idx, int& step) {
  using Element = typename Traits::Element;
  constexpr BwdKind kKind = Traits::kKind;
  constexpr bool kRowSt = Traits::kRowStationary;
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN;
  constexpr int kDQK = Traits::kDQK, kDV = Traits::kDV;
  constexpr int kChunkQK = Traits::kChunkQK, kChunkV = Traits::kChunkV;
  // log2(1 / sqrt(DQK)) = log2(p.scale), exact for the three head dims.
  constexpr float kLog2Scale = kDQK == 64 ? -3.f : (kDQK == 128 ? -3.5f : -4.f);
  const MlstmBackwardParams& p = params.p;
  const int64_t S = p.S, bh = tile.bh, st0 = tile.st0;
  // rden and db exist only for pass kGradients: kDhu (pass kRowDotProducts, which
  // computes what they are made of) must not read them; they are null then. kDQ forms
  // them itself where fwd_h_ptr is set (and writes them for the other kinds).
  const bool forms_norm_terms = Traits::kFormsNormTerms && p.fwd_h_ptr != nullptr;
  const bool reads_row_grads = kKind != BwdKind::kDhu && !forms_norm_terms;
  // With forms_norm_terms: whether this sequence takes the row pass's values.
  const bool row_pass_seq = forms_norm_terms && p.row_pass_flags[bh] != 0;
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
  constexpr bool kOutQK = Traits::kOutQK, kOutV = Traits::kOutV, kNeedsDP = Traits::kNeedsDP;
  const int chunk = Traits::kFirstChunk + tile.out_slice;
  const int chunk_qk = kOutQK ? chunk : 0, chunk_v = kOutV ? chunk : 0;
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
  const float* rden = p.rden_ptr + bh * S;
  const float* dbp = p.db_ptr + bh * S;
  // log w = row term + column term against this CTA's first stationary row's F.
  const BwdLogWeights logw{fcum, p.igate_ptr + bh * S, p.m_ptr + bh * S, fcum[st0]};
  auto row_term = [&](int64_t t) { return logw.row(t); };
  auto col_term = [&](int64_t j) { return logw.col(j); };

  // Stationary-row terms: (row term, rden, db) of rows t for kDhu / kDQ, the column
  // term of columns j for kDKV.
  float x_exp[kRows], x_rden[kRows], x_db[kRows], row_stat[kRows], row_b[kRows];
  int64_t x_idx[kRows];
  CUTLASS_PRAGMA_UNROLL
  for (int r = 0; r < kRows; ++r) {
    x_idx[r] = st0 + get<0>(tScS_rc(r, 0));
    const bool in = x_idx[r] < S;
    x_exp[r] = in ? (kRowSt ? row_term(x_idx[r]) : col_term(x_idx[r])) + kLog2Scale : -INFINITY;
    x_rden[r] = in && kRowSt && reads_row_grads ? rden[x_idx[r]] : 0.f;
    x_db[r] = in && kRowSt && reads_row_grads ? dbp[x_idx[r]] : 0.f;
    if (forms_norm_terms && in) {  // the forward's b and m, for form_norm_terms (below)
      x_rden[r] = p.norm_rows_ptr[bh * S + x_idx[r]];
      x_db[r] = p.m_ptr[bh * S + x_idx[r]];
    }
    row_stat[r] = 0.f;
    row_b[r] = 0.f;
  }
  // rden and db of this thread's two rows (normalizer_terms.h), formed while the first
  // streamed tile's GEMMs run. The quad that holds a row sums dh . h over a quarter of
  // its columns each.
  auto form_norm_terms = [&]() {
    if constexpr (Traits::kFormsNormTerms) {
      Tensor sH = make_tensor(make_smem_ptr(storage.smem_h.data()), typename Traits::SmemLayoutXv{});
      constexpr int kQuarter = kDV / 4, kVec = 16 / sizeof(Element);
      static_assert(kQuarter % kVec == 0);
      const int col0 = (thread_idx % 4) * kQuarter;
      float dot[kRows] = {0.f, 0.f};
      CUTLASS_PRAGMA_UNROLL
      for (int r = 0; r < kRows; ++r) {
        const int row = get<0>(tScS_rc(r, 0));
        CUTLASS_PRAGMA_UNROLL
        for (int c = col0; c < col0 + kQuarter; c += kVec) {
          const uint4 dv = *reinterpret_cast<const uint4*>(&sXv(row, c));
          const uint4 hv = *reinterpret_cast<const uint4*>(&sH(row, c));
          const Element* dx = reinterpret_cast<const Element*>(&dv);
          const Element* hx = reinterpret_cast<const Element*>(&hv);
          CUTLASS_PRAGMA_UNROLL
          for (int e = 0; e < kVec; ++e) {
            dot[r] = fmaf(static_cast<float>(dx[e]), static_cast<float>(hx[e]), dot[r]);
          }
        }
      }
      // x_rden, x_db hold the forward's b and m so far (loaded at the item's start). The
      // row pass's sequences (normalizer_grad.h) take its b and dh . u instead.
      CUTLASS_PRAGMA_UNROLL
      for (int r = 0; r < kRows; ++r) {
        const float d = quad_sum(dot[r]);
        if (x_idx[r] < S) {
          const int64_t t = bh * S + x_idx[r];
          const NormalizerTerms nt =
              row_pass_seq ? normalizer_terms(p.bsum_ptr[t], x_db[r], p.eps, p.dhu_ptr[t], true)
                           : normalizer_terms(x_rden[r], x_db[r], p.eps, d, false);
          x_rden[r] = nt.rden;
          x_db[r] = nt.db;
          if (chunk == 0 && thread_idx % 4 == 0) {
            p.rden_ptr[t] = nt.rden;
            p.db_ptr[t] = nt.db;
          }
        }
      }
    }
  };

  // State terms (docs/semantics.md): the outputs start at row_scale * (X state), from
  // the state's pieces (hi part, then lo part) that precede the streamed tiles in the
  // pipeline.
  if constexpr (Traits::kStatePieces > 0) {
    const BwdState state = bwd_state(p, kKind);
    if (state.lowp != nullptr) {
      const float factor = state.factor != nullptr ? state.factor[bh] : 1.f;
      const RowStateAddend& add_qk = kKind == BwdKind::kDQ ? p.dq_add : p.dk_add;
      float scale_qk[kRows], scale_v[kRows];
      CUTLASS_PRAGMA_UNROLL
      for (int r = 0; r < kRows; ++r) {
        const bool in = x_idx[r] < S;
        scale_qk[r] = in && kOutQK ? add_qk.row_scale[bh * S + x_idx[r]] * factor : 0.f;
        scale_v[r] = in && kOutV ? p.dv_add.row_scale[bh * S + x_idx[r]] * factor : 0.f;
      }
      typename Traits::TiledMmaStateV mma_sv;
      auto thr_sv = mma_sv.get_thread_slice(thread_idx);
      Tensor tVrX = thr_sv.partition_fragment_A(sXqk);  // (MMA, 1, DQK/16) descriptors
      mma_sv.accumulate_ = GMMA::ScaleOut::One;          // acc_v was cleared
      Tensor acc_qk_rc = make_tensor(acc_qk.data(), acc_layout_rowcol(acc_qk.layout()));
      const int first = bwd_first_state_piece<Traits>(tile);
      const int qk_first = chunk_qk * Traits::kPiecesPerChunkQK;
      float state_dot[kRows] = {0.f, 0.f};  // this thread's part of the row dots
      CUTLASS_PRAGMA_UNROLL
      for (int part_i = 0; part_i < Traits::kStateParts * Traits::kStatePieces; ++part_i) {
        const int i = part_i % Traits::kStatePieces;  // the piece within the part
        pipeline.consumer_wait(read);
        const int stage = read.index();
        if constexpr (kOutQK || Traits::kStateDot) {
          // X_v piece^T: columns [(first + i) * kBlockN, ...) of dh C^T or v dC^T, for the
          // dq / dk chunk or for the row dot.
          const bool for_qk = kOutQK && first + i >= qk_first &&
                              first + i < qk_first + Traits::kPiecesPerChunkQK;
          const bool for_dot = Traits::kStateDot;
          if (for_qk || for_dot) {
            wgmma_issue</*kZeroInit=*/true>(mma_p, tPrX, tPrY(_, _, _, stage), tSrP);
            warpgroup_wait<0>();
            warpgroup_fence_operand(tSrP);
          }
          if (for_dot) {  // with q's columns of this piece, from shared memory
            CUTLASS_PRAGMA_UNROLL
            for (int r = 0; r < kRows; ++r) {
              CUTLASS_PRAGMA_UNROLL
              for (int c = 0; c < kCols; ++c) {
                const int row = get<0>(tScS_rc(r, c));
                const int col = (first + i) * kBlockN + get<1>(tScS_rc(r, c));
                state_dot[r] = fmaf(static_cast<float>(sXqk(row, col)), g_rc(r, c), state_dot[r]);
              }
            }
          }
          if constexpr (kOutQK) {
            // Columns [pq * kBlockN, ...) of the dq / dk chunk.
            CUTLASS_PRAGMA_UNROLL
            for (int pq = 0; pq < Traits::kPiecesPerChunkQK; ++pq) {
              if (first + i == qk_first + pq) {
                CUTLASS_PRAGMA_UNROLL
                for (int r = 0; r < kRows; ++r) {
                  CUTLASS_PRAGMA_UNROLL
                  for (int c = 0; c < kCols; ++c) {
                    acc_qk_rc(r, pq * kCols + c) =
                        fmaf(scale_qk[r], g_rc(r, c), acc_qk_rc(r, pq * kCols + c));
                  }
                }
              }
            }
          }
        }
        if constexpr (kOutV) {
          // dv chunk += X_qk[:, piece rows] piece[:, chunk] (first = 0: i is the piece).
          Tensor t = make_tensor(make_smem_ptr(storage.smem_yv.data() + stage * kBlockN * kDV +
                                               chunk_v * kBlockN * kChunkV),
                                 typename Traits::template SmemLayoutChunkT<kChunkV>{});
          Tensor tB = thr_sv.partition_fragment_B(t);
          constexpr int kSteps = kBlockN / 16;
          warpgroup_fence_operand(acc_v);
          warpgroup_arrive();
          CUTLASS_PRAGMA_UNROLL
          for (int k = 0; k < kSteps; ++k) {
            cute::gemm(mma_sv, tVrX(_, _, i * kSteps + k), tB(_, _, k), acc_v);
          }
          warpgroup_commit_batch();
          warpgroup_wait<0>();
          warpgroup_fence_operand(acc_v);
        }
        pipeline.consumer_release(read);
        ++read;
      }
      if constexpr (Traits::kStateDot) {
        CUTLASS_PRAGMA_UNROLL
        for (int r = 0; r < kRows; ++r) {
          const float d = quad_sum(state_dot[r]) * factor;
          if (thread_idx % 4 == 0 && x_idx[r] < S) p.q_dh_c_ptr[bh * S + x_idx[r]] = d;
        }
      }
      if constexpr (kKind == BwdKind::kDKV || kKind == BwdKind::kDK) {
        // k_j . (its dk chunk's state terms g_j (v_j dC^T + dn_S)): acc_qk holds the first
        // part so far; the dn_S part is added here in the dot only (the epilogue adds
        // it to dk).
        if (p.k_dk_state_ptr != nullptr) {
          const float* dn = p.dk_add.y != nullptr ? p.dk_add.y + bh * kDQK : nullptr;
          float dot[kRows], y_scale[kRows];
          CUTLASS_PRAGMA_UNROLL
          for (int r = 0; r < kRows; ++r) {
            dot[r] = 0.f;
            y_scale[r] =
                dn != nullptr && x_idx[r] < S ? p.dk_add.y_row_scale[bh * S + x_idx[r]] : 0.f;
          }
          // An opaque 0 that the smem addresses below depend on: without it ptxas
          // computes all of them before the state pieces' WGMMAs and spills them.
          int zero;
          asm volatile("mov.b32 %0, 0;" : "=r"(zero));
          CUTLASS_PRAGMA_UNROLL
          for (int pq = 0; pq < Traits::kPiecesPerChunkQK; ++pq) {
            CUTLASS_PRAGMA_UNROLL
            for (int c = 0; c < kCols; ++c) {
              const int col = chunk_qk * kChunkQK + pq * kBlockN + get<1>(tScS_rc(0, c)) + zero;
              const float y = dn != nullptr ? dn[col] : 0.f;
              CUTLASS_PRAGMA_UNROLL
              for (int r = 0; r < kRows; ++r) {
                const float a = fmaf(y_scale[r], y, acc_qk_rc(r, pq * kCols + c));
                dot[r] = fmaf(static_cast<float>(sXqk(get<0>(tScS_rc(r, c)), col)), a, dot[r]);
              }
            }
          }
          CUTLASS_PRAGMA_UNROLL
          for (int r = 0; r < kRows; ++r) {
            const float d = quad_sum(dot[r]);
            if (thread_idx % 4 == 0 && x_idx[r] < S) {
              p.k_dk_state_ptr[(chunk_qk * p.B * p.NH + bh) * S + x_idx[r]] = d;
            }
          }
        }
      }
      if constexpr (kOutV) {
        Tensor acc_v_rc = make_tensor(acc_v.data(), acc_layout_rowcol(acc_v.layout()));
        CUTLASS_PRAGMA_UNROLL
        for (int r = 0; r < kRows; ++r) {
          CUTLASS_PRAGMA_UNROLL
          for (int c = 0; c < size<1>(acc_v_rc); ++c) acc_v_rc(r, c) *= scale_v[r];
        }
      }
    }
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

  for (int n = tile.n_first; n <= tile.n_last; ++n, ++step) {
    float (*sc)[kBlockN] = storage.scalars[wg][step & 1];
    if (tid_wg < kBlockN) {
      CUTLASS_PRAGMA_UNROLL
      for (int k = 0; k < Traits::kNumScalars; ++k) sc[k][tid_wg] = pf[k];
    }
    named_barrier_sync(kBarrierScalarsWG0 + wg, 128);
    if (n < tile.n_last) prefetch(n + 1);

    pipeline.consumer_wait(read);
    const int stage = read.index();
    // Ping-pong (if on): the two warpgroups take turns issuing their score GEMMs, so
    // that one's elementwise work runs under the other's tensor-core work.
    if constexpr (Traits::kPingPong) named_barrier_sync(kBarrierSchedWG0 + wg, 256);
    wgmma_issue</*kZeroInit=*/true>(mma_s, tSrX, tSrY(_, _, _, stage), tSrS);
    if constexpr (kNeedsDP) {
      wgmma_issue</*kZeroInit=*/true>(mma_p, tPrX, tPrY(_, _, _, stage), tSrP);
    }
    if constexpr (Traits::kPingPong) named_barrier_arrive(kBarrierSchedWG0 + 1 - wg, 256);
    if (forms_norm_terms && n == tile.n_first) form_norm_terms();
    warpgroup_wait<0>();
    warpgroup_fence_operand(tSrS);
    warpgroup_fence_operand(tSrP);

    // Weights, dS (into the dP accumulator) and P (kDKV's dv operand, into the S
    // accumulator), the row statistics; all in registers.
    const int64_t y0 = static_cast<int64_t>(n) * kBlockN;
    const bool masked = kRowSt ? y0 + kBlockN - 1 > st0 : y0 < st0 + kBlockM - 1;
    // The weights carry the score scale (x_exp includes log2 of it): with
    // s_tj = scale * acc, w * s = (w * scale) * acc and dS * s = (dS * scale) * acc,
    // and the output GEMMs accumulate scale * dS directly.
    auto elementwise = [&](auto masked_c) {
      constexpr bool kMasked = decltype(masked_c)::value;
      CUTLASS_PRAGMA_UNROLL
      for (int r = 0; r < kRows; ++r) {
        float stat = 0.f, bsum = 0.f;
        // Accumulator columns c, c + 1 (c even) are streamed rows cl, cl + 1: the
        // scalars of both come in one 8-byte shared-memory load.
        CUTLASS_PRAGMA_UNROLL
        for (int c = 0; c < kCols; c += 2) {
          const int cl = get<1>(tScS_rc(r, c));
          const float2 e2 = *reinterpret_cast<const float2*>(&sc[0][cl]);
          float2 rd2 = make_float2(x_rden[r], x_rden[r]), db2 = make_float2(x_db[r], x_db[r]);
          if constexpr (!kRowSt) {
            rd2 = *reinterpret_cast<const float2*>(&sc[1][cl]);
            db2 = *reinterpret_cast<const float2*>(&sc[2][cl]);
          }
          CUTLASS_PRAGMA_UNROLL
          for (int e = 0; e < 2; ++e) {
            const float a = s_rc(r, c + e);
            const float w = exp2f(x_exp[r] + (e == 0 ? e2.x : e2.y));
            bool valid = true;
            if constexpr (kMasked) {
              valid = kRowSt ? y0 + cl + e <= x_idx[r] : y0 + cl + e >= x_idx[r];
            }
            if constexpr (kKind == BwdKind::kDhu) {
              const float pw = valid ? w * a : 0.f;
              stat += pw * g_rc(r, c + e);
              bsum += pw;
            } else {
              const float rd = e == 0 ? rd2.x : rd2.y;
              if constexpr (kNeedsDP) {
                const float db = e == 0 ? db2.x : db2.y;
                const float ds = valid ? w * fmaf(rd, g_rc(r, c + e), db) : 0.f;
                stat += ds * a;
                g_rc(r, c + e) = ds;
              }
              if constexpr (kOutV) s_rc(r, c + e) = valid ? w * a * rd : 0.f;
            }
          }
        }
        row_stat[r] += stat;
        if constexpr (kKind == BwdKind::kDhu) row_b[r] += bsum;
      }
    };
    if (masked) elementwise(cute::true_type{});
    else elementwise(cute::false_type{});

    if constexpr (kOutQK || kOutV) {
      if constexpr (kOutQK) {
        Tensor tOrDS = convert_regs<Element>(tSrP, acc_layout_as_a_operand(tSrP.layout()));
        wgmma_issue</*kZeroInit=*/false>(mma_oqk, tOrDS, out_operand_qk(stage), acc_qk);
      }
      if constexpr (kOutV) {
        Tensor tOrP = convert_regs<Element>(tSrS, acc_layout_as_a_operand(tSrS.layout()));
        wgmma_issue</*kZeroInit=*/false>(mma_ov, tOrP, out_operand_v(stage), acc_v);
      }
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc_qk);
      warpgroup_fence_operand(acc_v);
    }
    pipeline.consumer_release(read);
    ++read;
  }
  // The stationary tiles are no longer read: the producer may load the next item's.
  storage.barrier_x_empty.arrive();

  // ---- epilogue: row statistics (output chunk 0 only), then the output chunks -----
  if constexpr (kNeedsDP) {
    float* stat_out = kKind == BwdKind::kDhu ? p.dhu_ptr : kRowSt ? p.rowsum_ptr : p.di_ptr;
    const bool writer = chunk == 0 && thread_idx % 4 == 0;
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
  // acc (kBlockM x kChunk) (+ the addend's y part; its x part is in acc already) ->
  // columns [chunk * kChunk, ...) of a contiguous (B, NH, S, d_out) output.
  auto store = [&](auto const& acc, auto const& thr_mma, auto chunk_c, int chunk, void* out_ptr,
                   const RowStateAddend& add, int d_out) {
    constexpr int kChunk = decltype(chunk_c)::value;
    const int64_t col0 = static_cast<int64_t>(chunk) * kChunk;
    Element* out = reinterpret_cast<Element*>(out_ptr) + bh * S * d_out + col0;
    const float* add_y = add.y != nullptr ? add.y + bh * d_out + col0 : nullptr;
    Tensor tOcO = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kChunk>>{}));
    // Accumulator elements e, e + 1 (e even) are columns col, col + 1 of one row: one
    // 32-bit store each pair.
    CUTLASS_PRAGMA_UNROLL
    for (int e = 0; e < size(acc); e += 2) {
      const int64_t row = st0 + get<0>(tOcO(e));
      if (row < S) {
        const int col = get<1>(tOcO(e));
        const int64_t off = row * d_out + col;
        float v0 = acc(e), v1 = acc(e + 1);
        if (add_y != nullptr) {
          const float rs = add.y_row_scale[bh * S + row];
          const float2 ay = *reinterpret_cast<const float2*>(add_y + col);
          v0 = fmaf(rs, ay.x, v0);
          v1 = fmaf(rs, ay.y, v1);
        }
        *reinterpret_cast<uint32_t*>(out + off) = pack2<Element>(v0, v1);
      }
    }
  };
  if constexpr (kKind == BwdKind::kDQ) {
    store(acc_qk, thr_oqk, Int<kChunkQK>{}, chunk_qk, p.dq_ptr, p.dq_add, kDQK);
  } else {
    if constexpr (kOutQK) store(acc_qk, thr_oqk, Int<kChunkQK>{}, chunk_qk, p.dk_ptr, p.dk_add, kDQK);
    if constexpr (kOutV) store(acc_v, thr_ov, Int<kChunkV>{}, chunk_v, p.dv_ptr, p.dv_add, kDV);
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
  if (threadIdx.x == 0) {
    storage.barrier_x.init(/*arrive_count=*/1);
    storage.barrier_x_empty.init(/*arrive_count=*/Traits::kNumMmaThreads);
  }

  MainloopPipeline pipeline = make_tma_pipeline<MainloopPipeline>(
      storage.pipeline, Traits::kTmaBytesY, Traits::kNumMmaThreads);
  __syncthreads();

  // Item k of this CTA: its id goes to storage.work[k % 2] before barrier_x's phase k
  // completes (the TMA bytes of its stationary tiles, or a plain arrive carrying the
  // end-of-work id num_work).
  const int num_work = static_cast<int>(bwd_num_work_listed<Traits>(params.p));
  if (warp_group_idx == 0) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (threadIdx.x == 0) {
      int* counter = params.p.work_counters + static_cast<int>(Traits::kKind);
      typename Traits::PipelineState write =
          cutlass::make_producer_start_state<MainloopPipeline>();
      int w = blockIdx.x;
      for (int item = 0;; ++item) {
        if (item > 0) storage.barrier_x_empty.wait((item - 1) & 1);
        storage.work[item & 1] = w < num_work ? w : num_work;
        if (w >= num_work) {
          storage.barrier_x.arrive();
          break;
        }
        bwd_load<Traits>(params, storage, pipeline, write, bwd_tile<Traits>(params.p, w));
        w = gridDim.x + atomicAdd(counter, 1);
      }
    }
  } else {
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    const int wg = warp_group_idx - 1;
    if (Traits::kPingPong && wg == 0) named_barrier_arrive(kBarrierSchedWG0, 256);  // WG 0 first
    typename Traits::PipelineState read;
    int step = 0;
    for (int item = 0;; ++item) {
      storage.barrier_x.wait(item & 1);
      const int w = storage.work[item & 1];
      if (w >= num_work) break;
      bwd_consume<Traits>(params, storage, pipeline, read, bwd_tile<Traits>(params.p, w),
                          static_cast<int>(threadIdx.x) - 128, step);
    }
    // Take warpgroup 1's last arrival so that no named barrier is left half-arrived.
    if (Traits::kPingPong && wg == 0) named_barrier_sync(kBarrierSchedWG0, 256);
  }
#endif
}

}  // namespace xlstm_sm90
