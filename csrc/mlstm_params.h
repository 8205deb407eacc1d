// Parameters of the mLSTM forward kernels: raw pointers, int64 strides and sizes,
// filled once from tensors on the host. Kernels never see an at::Tensor.
#pragma once

#include <cstdint>

struct MlstmForwardParams {
  // q, k: (B, NH, S, DQK); v: (B, NH, S, DV); h: (B, NH, S, DV). Element type is
  // fp16 or bf16 (is_bf16); the last dimension has stride 1.
  const void* q_ptr = nullptr;
  const void* k_ptr = nullptr;
  const void* v_ptr = nullptr;
  void* h_ptr = nullptr;
  int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;
  int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;
  int64_t v_batch_stride = 0, v_head_stride = 0, v_row_stride = 0;
  int64_t h_batch_stride = 0, h_head_stride = 0, h_row_stride = 0;

  // Gates, contiguous (B, NH, S): input gate i (fp32) and the cumulative log forget
  // gate F_t = sum_{s<=t} logsigmoid(f_s), in fp64 so that F_t - F_j keeps its
  // precision for long sequences (|F| reaches thousands).
  const float* igate_ptr = nullptr;
  const double* fcum_ptr = nullptr;

  // Optional initial state, contiguous fp32: C0 (B, NH, DQK, DV), n0 (B, NH, DQK),
  // m0 (B, NH, 1). A null pointer means zeros.
  const float* c0_ptr = nullptr;
  const float* n0_ptr = nullptr;
  const float* m0_ptr = nullptr;
  // C0 for the tensor cores (the sm90 family reads these; the other families use c0_ptr,
  // which stays set): c0_lowp = scale * C0 / c0_factor as 16-bit hi + lo parts,
  // contiguous (B, NH, 2 DQK, DV) (hi rows, then lo rows), and c0_factor (B, NH) fp32, a
  // power of two that keeps fp16 in range (null for bf16). The kernel forms q_t c0_lowp
  // with WGMMAs over both parts and scales it by c0_factor. (Rounding C0 once, as P is
  // for P V, brought an fp16 chunkwise case to 0.99 of the accuracy bound.)
  const void* c0_lowp_ptr = nullptr;
  const float* c0_factor_ptr = nullptr;

  // Per-row statistics, contiguous fp32 (B, NH, S): the stabilizer m_t and the raw
  // signed normalizer b_t (before abs / floor). m_t = F_t + max(m0, max_{j<=t}(i_j - F_j))
  // depends on the gates only: with m_rows_ready the host has written it before the
  // launch and the kernel reads it (the sm90 family needs this); else the kernel finds
  // it as a running max and writes it (sm80, sm75).
  float* m_rows_ptr = nullptr;
  float* norm_rows_ptr = nullptr;
  bool m_rows_ready = false;

  // One int, zero before the launch: the sm90 kernel's persistent CTAs claim work
  // items from it (the other families ignore it).
  int* work_counter = nullptr;

  int64_t B = 0, NH = 0, S = 0;
  int DQK = 0, DV = 0;
  float eps = 1e-6f;
  float scale = 1.f;  // 1 / sqrt(DQK)
  bool is_bf16 = false;
  bool has_c0 = false, has_n0 = false, has_m0 = false;
};

// Parameters of the mLSTM backward kernels (the quadratic, within-sequence part of
// the gradient; state terms, dF and the casts are done on the host side, see
// csrc/cuda/parallel_backward_host.cpp). Notation of docs/semantics.md:
//   w_tj = exp(F_t - F_j + i_j - m_t) for j <= t,  s_tj = scale * q_t . k_j,
//   dS_tj = w_tj * (rden_t * dh_t . v_j + db_t),
//   dq_t = scale * sum_j dS_tj k_j,  dk_j = scale * sum_t dS_tj q_t,
//   dv_j = sum_t w_tj s_tj rden_t dh_t,
//   dI_j = sum_t dS_tj s_tj (column sums),  rowsum_t = sum_j dS_tj s_tj,
//   dhu_t = sum_j w_tj s_tj dh_t . v_j  (dh_t . u_t, for db_t; computed first), and
//   bsum_t = sum_j w_tj s_tj (the normalizer b_t, recomputed with the backward's own
//   weights so that u, b and their gradients are consistent to fp32 rounding).
enum class BackwardPass { kRowDotProducts, kGradients };
constexpr int kNumWorkCounters = 8;

// An fp32 addend of a backward output in factored form:
//   add[t, c] = row_scale[t] * x[t, c] + y_row_scale[t] * y[c]
// with x contiguous (B, NH, S, D), y (B, NH, D) one vector per sequence and the row
// scales (B, NH, S). A null x (or y) drops that part; all null: no addend.
struct RowStateAddend {
  const float* x = nullptr;
  const float* row_scale = nullptr;
  const float* y = nullptr;
  const float* y_row_scale = nullptr;
};

struct MlstmBackwardParams {
  // Inputs (B, NH, S, D) with unit last stride, fp16 or bf16 (is_bf16).
  const void* q_ptr = nullptr;
  const void* k_ptr = nullptr;
  const void* v_ptr = nullptr;
  const void* dh_ptr = nullptr;
  int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;
  int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;
  int64_t v_batch_stride = 0, v_head_stride = 0, v_row_stride = 0;
  int64_t dh_batch_stride = 0, dh_head_stride = 0, dh_row_stride = 0;

  // Outputs, contiguous (B, NH, S, D), input dtype.
  void* dq_ptr = nullptr;
  void* dk_ptr = nullptr;
  void* dv_ptr = nullptr;
  // Optional fp32 addends (the initial/final-state terms), added before the cast.
  RowStateAddend dq_add, dk_add, dv_add;
  // The sm90 family forms the x parts of those addends itself, on tensor cores, from
  // 16-bit states (x null there; the row scales stay): C = c_lowp * c_factor gives
  // dq's x_t = dh_t C^T, dC = dc_lowp * dc_factor gives dk's x_j = v_j dC^T and dv's
  // x_j = k_j dC. Each is (B, NH, 2 DQK, DV): the state / factor as 16-bit hi (rows
  // [0, DQK)) + lo (rows [DQK, 2 DQK)) parts, which keep the gradient's fp32-class
  // precision where the state terms cancel against others (the normalizer's gradient);
  // factors as MlstmForwardParams::c0_lowp_ptr.
  const void* c_lowp = nullptr;
  const float* c_factor = nullptr;
  const void* dc_lowp = nullptr;
  const float* dc_factor = nullptr;
  // With c_lowp, the row dot q_t . (dh_t C^T) that db and dF need, fp32 (B, NH, S),
  // written by the sm90 row pass (kRowDotProducts).
  float* q_dh_c_ptr = nullptr;
  // With dc_lowp, the final state's share of dI, g_j k_j . (v_j dC^T + dn_S), as fp32
  // partial dots over the columns of each 128-wide dk chunk: (ceil(DQK / 128), B, NH, S),
  // written by the sm90 column pass (kDKV, kDK) from its state terms; the host sums the
  // chunks.
  float* k_dk_state_ptr = nullptr;

  // Per-row terms, contiguous (B, NH, S): F_t = sum_{s<=t} logsigmoid(f_s) in fp64, the
  // input gate i (fp32), the forward's stabilizer m_t (fp32), rden_t = 1 / den_t and
  // db_t (fp32; rden and db only read by pass kGradients). The kernels form
  // log w_tj = F_t - F_j + i_j - m_t from differences to a per-CTA reference F taken
  // in fp64, as the forward does: |F| grows with S, F_t - F_j must not cancel in fp32.
  const double* fcum_ptr = nullptr;
  const float* igate_ptr = nullptr;
  const float* m_ptr = nullptr;
  float* rden_ptr = nullptr;  // written by the kernels only with fwd_h_ptr (below)
  float* db_ptr = nullptr;

  // Pass kRowDotProducts over some sequences only (sm90 family; null: all): the first
  // *row_pass_count entries of row_pass_seqs are the sequences b * NH + h to recompute
  // (device memory, so that the host need not wait for the count; normalizer_grad.h).
  const int* row_pass_seqs = nullptr;
  const int* row_pass_count = nullptr;
  // The same for the sm80 / sm75 families (one thread block per work item): a flag per
  // sequence b * NH + h, (B * NH) int32, device memory; blocks of unflagged sequences
  // return at once. Null: all. Also read by the sm90 pass kGradients with fwd_h_ptr
  // (below): which sequences' rows take the row pass's values.
  const int* row_pass_flags = nullptr;

  // Pass kGradients may form rden and db itself (the sm90 family): with fwd_h_ptr set, its
  // dq kernel (which runs first) forms them for its stationary rows from the forward's
  // output h (B, NH, S, DV) (input dtype, unit last stride), as normalizer_grad does
  // (csrc/cuda/normalizer_grad.h): from norm_rows (the forward's b_t, fp32 (B, NH, S))
  // and dh . h, or for the sequences in row_pass_flags from bsum_ptr and dhu_ptr (pass
  // kRowDotProducts). It writes them to rden_ptr / db_ptr, which the later kernels read.
  const void* fwd_h_ptr = nullptr;
  int64_t fwd_h_batch_stride = 0, fwd_h_head_stride = 0, fwd_h_row_stride = 0;
  const float* norm_rows_ptr = nullptr;
  float eps = 0.f;

  // Outputs, contiguous fp32 (B, NH, S): column sums (dI) and row sums of dS * s
  // (pass kGradients), dh_t . u_t of the quadratic part (pass kRowDotProducts).
  float* di_ptr = nullptr;
  float* rowsum_ptr = nullptr;
  float* dhu_ptr = nullptr;
  float* bsum_ptr = nullptr;  // sum_j w_tj s_tj (pass kRowDotProducts)

  // kNumWorkCounters int32 zeros, device memory, fresh for each backward call: the
  // persistent sm90 kernels hand out work items with atomicAdd on one counter per
  // launch. The other families ignore it.
  int* work_counters = nullptr;

  int64_t B = 0, NH = 0, S = 0;
  int DQK = 0, DV = 0;
  float scale = 1.f;  // 1 / sqrt(DQK)
  bool is_bf16 = false;
};
