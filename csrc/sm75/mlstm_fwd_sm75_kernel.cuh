// sm_75 family: mLSTM parallel forward with hand-written PTX (ldmatrix + mma.sync
// m16n8k8, fp16 in, fp32 accumulate), no CUTLASS. It is the "runs on every GPU
// >= 7.5" family: fp16 only (Turing has no bf16 MMA), simple synchronous loads
// (no cp.async before sm_80), a 64-wide DV slice per CTA.
//
// CTA = 4 warps = one tile of kBlockM = 64 rows of one (batch, head, DV slice);
// each warp owns 16 rows. For every causal column tile of kBlockN = 64 steps:
//   S  = Q K^T                      (mma m16n8k8, Q fragments kept in registers)
//   logD_tj = (F_t - F_j0) - (F_j - F_j0) + i_j,   differences formed in fp64
//   m_new = max(m, rowmax logD);  O, b *= exp(m - m_new)
//   P  = exp(logD - m_new) * S / sqrt(DQK);  b += rowsum P;  O += P V
// The running max starts at the initial-state column F_t + m_0, and O, b start at
// q̂ C_0 and q̂·n_0 computed in fp32 (the state is fp32; rounding it to fp16 for
// an MMA would lose accuracy). Finally h = O / (max(|b|, exp(-m)) + eps).
//
// Shared memory rows are padded by 8 halves (16 bytes) so that the 8 row addresses
// of an ldmatrix hit 8 different bank groups.
#pragma once

#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "../mlstm_params.h"

namespace xlstm_sm75 {

constexpr int kBlockM = 64;   // rows per CTA (4 warps x 16)
constexpr int kBlockN = 64;   // key/value steps per column tile
constexpr int kBlockDV = 64;  // DV slice per CTA
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kPad = 8;       // halves of padding per smem row

__device__ __forceinline__ int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// d += a (16x8, row) * b (8x8, col); fp16 operands, fp32 accumulators.
__device__ __forceinline__ void mma_16x8x8(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(b0));
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// Copies `rows` x `cols` halves (cols a multiple of 8) from global to padded smem
// with 16-byte vectors; rows at or past `valid_rows` are zero-filled.
template <int kCols>
__device__ __forceinline__ void load_tile(__half* smem, const __half* gmem, int64_t row_stride,
                                         int rows, int valid_rows) {
  constexpr int kVecPerRow = kCols / 8;
  for (int idx = threadIdx.x; idx < rows * kVecPerRow; idx += kThreads) {
    const int r = idx / kVecPerRow, c = (idx % kVecPerRow) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < valid_rows) val = *reinterpret_cast<const uint4*>(gmem + r * row_stride + c);
    *reinterpret_cast<uint4*>(smem + r * (kCols + kPad) + c) = val;
  }
}

template <int kDQK>
__global__ void __launch_bounds__(kThreads)
mlstm_fwd_sm75_kernel(const MlstmForwardParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int kStrideK = kDQK + kPad;      // Q and K rows in smem
  constexpr int kStrideV = kBlockDV + kPad;  // V rows in smem
  __half* sK = reinterpret_cast<__half*>(smem_raw);  // Q first, then K tiles
  __half* sV = sK + kBlockN * kStrideK;
  float* s_col_f = reinterpret_cast<float*>(sV + kBlockN * kStrideV);  // F_j - F_j0 - i_j
  static_assert(kBlockM == kBlockN, "Q is staged in the K buffer");

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.x;
  const int64_t b = bh / p.NH, h = bh % p.NH;
  // Row tiles in reverse so the longest (last) tiles start first.
  const int64_t row0 = (static_cast<int64_t>(gridDim.y) - 1 - blockIdx.y) * kBlockM;
  const int dv0 = blockIdx.z * kBlockDV;
  const int64_t S = p.S;

  const __half* q = static_cast<const __half*>(p.q_ptr) + b * p.q_batch_stride + h * p.q_head_stride;
  const __half* k = static_cast<const __half*>(p.k_ptr) + b * p.k_batch_stride + h * p.k_head_stride;
  const __half* v = static_cast<const __half*>(p.v_ptr) + b * p.v_batch_stride + h * p.v_head_stride + dv0;
  const float* igate = p.igate_ptr + bh * S;
  const double* fcum = p.fcum_ptr + bh * S;

  // ---- Q fragments: A operand of m16n8k8 for the warp's 16 rows, all of DQK.
  load_tile<kDQK>(sK, q + row0 * p.q_row_stride, p.q_row_stride, kBlockM,
                  static_cast<int>(min_i64(kBlockM, S - row0)));
  __syncthreads();
  // ldmatrix x4 over a 16x16 block gives the A fragments of two k8 slices.
  uint32_t q_frag[kDQK / 16][4];
  {
    const int r = warp * 16 + (lane % 16), c = (lane / 16) * 8;
#pragma unroll
    for (int kk = 0; kk < kDQK / 16; ++kk) ldmatrix_x4(q_frag[kk], sK + r * kStrideK + kk * 16 + c);
  }

  // Rows of this thread: r_lo = lane/4 and r_hi = lane/4 + 8 of the warp's 16.
  const int64_t t_row[2] = {row0 + warp * 16 + lane / 4, row0 + warp * 16 + lane / 4 + 8};
  const float m0 = p.has_m0 ? p.m0_ptr[bh] : 0.f;
  double f_row[2];
  float m_run[2], b_run[2];
#pragma unroll
  for (int x = 0; x < 2; ++x) {
    f_row[x] = fcum[min_i64(t_row[x], S - 1)];
    m_run[x] = static_cast<float>(f_row[x]) + m0;  // initial-state column
    b_run[x] = 0.f;
  }

  // ---- O accumulators (16 rows x 64 cols per warp = 8 n8-tiles), seeded with the
  // initial state in fp32: O = q̂ C0, b = q̂ · n0 (weight exp(F_t + m0 - m) = 1).
  float acc_o[kBlockDV / 8][4];
#pragma unroll
  for (int n = 0; n < kBlockDV / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_o[n][e] = 0.f;
  if (p.has_c0 || p.has_n0) {
    const float* c0 = p.has_c0 ? p.c0_ptr + bh * p.DQK * p.DV + dv0 : nullptr;
    const float* n0 = p.has_n0 ? p.n0_ptr + bh * p.DQK : nullptr;
#pragma unroll
    for (int x = 0; x < 2; ++x) {
      const __half* q_row = sK + (warp * 16 + lane / 4 + 8 * x) * kStrideK;
      float bsum = 0.f;
      for (int d = 0; d < kDQK; ++d) {
        const float qd = __half2float(q_row[d]) * p.scale;
        if (n0) bsum += qd * n0[d];
        if (c0) {
#pragma unroll
          for (int n = 0; n < kBlockDV / 8; ++n) {
            const int c = n * 8 + (lane % 4) * 2;
            acc_o[n][2 * x] += qd * c0[d * p.DV + c];
            acc_o[n][2 * x + 1] += qd * c0[d * p.DV + c + 1];
          }
        }
      }
      // Every lane of the quad holds the same rows: count the state's b once.
      b_run[x] = (lane % 4 == 0) ? bsum : 0.f;
    }
  }

  // ---- Causal column tiles.
  const int64_t col_end = min_i64(row0 + kBlockM, S);
  for (int64_t j0 = 0; j0 < col_end; j0 += kBlockN) {
    const int valid = static_cast<int>(min_i64(kBlockN, S - j0));
    __syncthreads();  // previous tile (or Q) fully consumed
    load_tile<kDQK>(sK, k + j0 * p.k_row_stride, p.k_row_stride, kBlockN, valid);
    load_tile<kBlockDV>(sV, v + j0 * p.v_row_stride, p.v_row_stride, kBlockN, valid);
    const double f_ref = fcum[j0];
    for (int c = threadIdx.x; c < kBlockN; c += kThreads) {
      s_col_f[c] = c < valid ? static_cast<float>(fcum[j0 + c] - f_ref) - igate[j0 + c] : 0.f;
    }
    __syncthreads();

    // S = Q K^T for the warp's 16 rows x 64 columns: 8 n8-tiles.
    float acc_s[kBlockN / 8][4];
#pragma unroll
    for (int n = 0; n < kBlockN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_s[n][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kDQK / 16; ++kk) {
#pragma unroll
      for (int n = 0; n < kBlockN / 8; n += 2) {
        // x4: matrices (n, k lo), (n, k hi), (n+1, k lo), (n+1, k hi) of K rows.
        uint32_t kf[4];
        const int r = n * 8 + (lane % 8) + ((lane / 16) * 8), c = kk * 16 + ((lane / 8) % 2) * 8;
        ldmatrix_x4(kf, sK + r * kStrideK + c);
        mma_16x8x8(acc_s[n], q_frag[kk][0], q_frag[kk][1], kf[0]);
        mma_16x8x8(acc_s[n], q_frag[kk][2], q_frag[kk][3], kf[1]);
        mma_16x8x8(acc_s[n + 1], q_frag[kk][0], q_frag[kk][1], kf[2]);
        mma_16x8x8(acc_s[n + 1], q_frag[kk][2], q_frag[kk][3], kf[3]);
      }
    }

    // Decay, online max, P.
    float row_off[2];
#pragma unroll
    for (int x = 0; x < 2; ++x) row_off[x] = static_cast<float>(f_row[x] - f_ref);
    float m_new[2] = {m_run[0], m_run[1]};
#pragma unroll
    for (int n = 0; n < kBlockN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int x = e / 2, c = n * 8 + (lane % 4) * 2 + (e % 2);
        const int64_t col = j0 + c;
        const bool live = col <= t_row[x] && c < valid;
        const float logd = live ? row_off[x] - s_col_f[c] : -INFINITY;
        acc_s[n][e] = live ? acc_s[n][e] : 0.f;
        // keep logD in place of a second array: reuse acc_s for S, recompute logD below
        m_new[x] = fmaxf(m_new[x], logd);
      }
#pragma unroll
    for (int x = 0; x < 2; ++x) {
      m_new[x] = fmaxf(m_new[x], __shfl_xor_sync(0xffffffff, m_new[x], 1));
      m_new[x] = fmaxf(m_new[x], __shfl_xor_sync(0xffffffff, m_new[x], 2));
      const float alpha = __expf(m_run[x] - m_new[x]);
      b_run[x] *= alpha;
#pragma unroll
      for (int n = 0; n < kBlockDV / 8; ++n) {
        acc_o[n][2 * x] *= alpha;
        acc_o[n][2 * x + 1] *= alpha;
      }
      m_run[x] = m_new[x];
    }
#pragma unroll
    for (int n = 0; n < kBlockN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int x = e / 2, c = n * 8 + (lane % 4) * 2 + (e % 2);
        const bool live = j0 + c <= t_row[x] && c < valid;
        const float w = live ? __expf(row_off[x] - s_col_f[c] - m_run[x]) : 0.f;
        acc_s[n][e] *= w * p.scale;
        b_run[x] += acc_s[n][e];
      }

    // O += P V: the m16n8 accumulators of two adjacent n8-tiles of P are exactly
    // the A fragments of one k8... of two k8 slices; V fragments via ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 8; ++kk) {
      const uint32_t a0 = pack_half2(acc_s[kk][0], acc_s[kk][1]);
      const uint32_t a1 = pack_half2(acc_s[kk][2], acc_s[kk][3]);
#pragma unroll
      for (int n = 0; n < kBlockDV / 8; n += 4) {
        // x4.trans: rows kk*8 + lane%8 of V, column blocks n, n+1, n+2, n+3.
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, sV + (kk * 8 + lane % 8) * kStrideV + (n + lane / 8) * 8);
        mma_16x8x8(acc_o[n], a0, a1, vf[0]);
        mma_16x8x8(acc_o[n + 1], a0, a1, vf[1]);
        mma_16x8x8(acc_o[n + 2], a0, a1, vf[2]);
        mma_16x8x8(acc_o[n + 3], a0, a1, vf[3]);
      }
    }
  }

  // ---- Epilogue: normalizer (summed over the quad), h, row statistics.
  __half* out = static_cast<__half*>(p.h_ptr) + b * p.h_batch_stride + h * p.h_head_stride + dv0;
#pragma unroll
  for (int x = 0; x < 2; ++x) {
    float bsum = b_run[x];
    bsum += __shfl_xor_sync(0xffffffff, bsum, 1);
    bsum += __shfl_xor_sync(0xffffffff, bsum, 2);
    const float den = fmaxf(fabsf(bsum), __expf(-m_run[x])) + p.eps;
    const float inv = 1.f / den;
    if (t_row[x] < S) {
      __half* out_row = out + t_row[x] * p.h_row_stride;
#pragma unroll
      for (int n = 0; n < kBlockDV / 8; ++n) {
        const int c = n * 8 + (lane % 4) * 2;
        *reinterpret_cast<uint32_t*>(out_row + c) =
            pack_half2(acc_o[n][2 * x] * inv, acc_o[n][2 * x + 1] * inv);
      }
      if (blockIdx.z == 0 && lane % 4 == 0) {
        p.m_rows_ptr[bh * S + t_row[x]] = m_run[x];
        p.norm_rows_ptr[bh * S + t_row[x]] = bsum;
      }
    }
  }
}

}  // namespace xlstm_sm75
