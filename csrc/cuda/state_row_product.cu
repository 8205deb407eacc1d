#include "cuda/state_row_product.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/kernel_inputs.h"
#include "cuda/mma_sm80.cuh"
#include "cuda/state_gemm.h"  // split_bf16
#include "cuda_device_info.h"

namespace xlstm {
namespace {

// CTA tile: 128 rows x kBN state columns, 8 warps of 16 rows each; K (the contracted dim)
// in steps of 32 through a two-stage cp.async pipeline. The state arrives split into bf16
// hi + lo (split_bf16, state-sized) in its own layout: (N, K) rows (kTranspose: 32 k of
// one column n per smem row, ldmatrix) or (K, N) rows (kBN n of one k per smem row,
// ldmatrix .trans).
constexpr int kBM = 128;
constexpr int kBK = 32;
constexpr int kThreads = 256;

struct Params {
  const __nv_bfloat16* a;
  const __nv_bfloat16* state_hi;  // (B, H, K, N), or (B, H, N, K) if transposed; contiguous
  const __nv_bfloat16* state_lo;  // the same layout, or null (the state rounded once)
  const __nv_bfloat16* c;         // (B, H, L, N) or null
  const float* y;                 // (B, H, N) or null
  float* out;                     // (B, H, L, N)
  float* dot_x;                   // (tiles_n, B * H, L) or null
  float* dot_y;
  int64_t a_batch, a_head, a_row;
  int64_t c_batch, c_head, c_row;
  int64_t H, BH;
  int L, K, N;
};

template <int kBN, bool kTranspose>
__global__ void __launch_bounds__(kThreads, 2) state_row_product_kernel(const Params p) {
  constexpr int kTilesN = kBN / 8;
  constexpr int kAChunks = kBM * kBK / 8;  // 16-byte chunks per stage
  constexpr int kBChunks = kBN * kBK / 8;
  static_assert(kAChunks % kThreads == 0 && kBChunks % kThreads == 0);
  __shared__ uint4 s_a[2][kAChunks];
  __shared__ uint4 s_hi[2][kBChunks];
  __shared__ uint4 s_lo[2][kBChunks];

  const int row_tiles = (p.L + kBM - 1) / kBM, tiles_n = p.N / kBN;
  const int row_tile = static_cast<int>(blockIdx.x % row_tiles);
  const int64_t rest = blockIdx.x / row_tiles;
  const int n_tile = static_cast<int>(rest % tiles_n);
  const int64_t z = rest / tiles_n, bi = z / p.H, head = z % p.H;
  const int r0 = row_tile * kBM, n0 = n_tile * kBN;
  const __nv_bfloat16* a = p.a + bi * p.a_batch + head * p.a_head;
  const int64_t state_offset = z * p.K * p.N;
  const bool split = p.state_lo != nullptr;

  const int t = threadIdx.x, lane = t % 32, warp = t / 32;

  auto load = [&](int k0, int stage) {
#pragma unroll
    for (int x = 0; x < kAChunks / kThreads; ++x) {
      const int cidx = t + x * kThreads, row = cidx / 4, ch = cidx % 4;
      const bool valid = r0 + row < p.L;
      const __nv_bfloat16* src = valid ? a + (r0 + row) * p.a_row + k0 + ch * 8 : a;
      cp_async_16(smem_address(&s_a[stage][swizzled_chunk4(row, ch)]), src, valid);
    }
#pragma unroll
    for (int x = 0; x < kBChunks / kThreads; ++x) {
      const int cidx = t + x * kThreads;
      int dst;
      int64_t src;
      if constexpr (kTranspose) {  // smem row = column n of M, 32 consecutive k
        const int n = cidx / 4, ch = cidx % 4;
        dst = swizzled_chunk4(n, ch);
        src = state_offset + static_cast<int64_t>(n0 + n) * p.K + k0 + ch * 8;
      } else {                     // smem row = k, kBN consecutive n
        const int k = cidx / (kBN / 8), ch = cidx % (kBN / 8);
        dst = swizzled_chunk<kBN / 8>(k, ch);
        src = state_offset + static_cast<int64_t>(k0 + k) * p.N + n0 + ch * 8;
      }
      cp_async_16(smem_address(&s_hi[stage][dst]), p.state_hi + src, true);
      if (split) cp_async_16(smem_address(&s_lo[stage][dst]), p.state_lo + src, true);
    }
  };

  float acc[kTilesN][4];
#pragma unroll
  for (int ni = 0; ni < kTilesN; ++ni)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[ni][e] = 0.f;

  // acc += A (16 rows x 16 k) * M (16 k x kBN) for one part (hi or lo) of M.
  auto mma_part = [&](const uint4* s_m, const uint32_t (&a_frag)[4], int kk) {
    const int i = lane / 8;
#pragma unroll
    for (int nj = 0; nj < kTilesN / 2; ++nj) {
      uint32_t bq[4];
      if constexpr (kTranspose) {
        const int n = nj * 16 + (i / 2) * 8 + lane % 8, ch = (kk + (i % 2) * 8) / 8;
        ldmatrix_x4(bq, smem_address(&s_m[swizzled_chunk4(n, ch)]));
      } else {
        const int k = kk + (i % 2) * 8 + lane % 8, ch = (nj * 16 + (i / 2) * 8) / 8;
        ldmatrix_x4_trans(bq, smem_address(&s_m[swizzled_chunk<kBN / 8>(k, ch)]));
      }
      mma_bf16_16816(acc[2 * nj], a_frag, bq[0], bq[1]);
      mma_bf16_16816(acc[2 * nj + 1], a_frag, bq[2], bq[3]);
    }
  };
  auto compute = [&](int stage) {
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      const int i = lane / 8;
      uint32_t a_frag[4];
      const int row = warp * 16 + (i % 2) * 8 + lane % 8, ch = (kk + (i / 2) * 8) / 8;
      ldmatrix_x4(a_frag, smem_address(&s_a[stage][swizzled_chunk4(row, ch)]));
      mma_part(s_hi[stage], a_frag, kk);
      if (split) mma_part(s_lo[stage], a_frag, kk);
    }
  };

  const int steps = p.K / kBK;
  load(0, 0);
  cp_async_commit_and_wait_all();
  __syncthreads();
  for (int s = 0; s < steps; ++s) {
    const int stage = s & 1;
    if (s + 1 < steps) load((s + 1) * kBK, stage ^ 1);  // flies while this step computes
    compute(stage);
    cp_async_commit_and_wait_all();
    __syncthreads();
  }

  // Accumulator element e of tile ni: row warp*16 + lane/4 (+ 8 for e >= 2), column
  // ni*8 + (lane%4)*2 + e%2.
  const __nv_bfloat16* c = p.c != nullptr ? p.c + bi * p.c_batch + head * p.c_head : nullptr;
  const float* y = p.y != nullptr ? p.y + z * p.N + n0 : nullptr;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = r0 + warp * 16 + lane / 4 + half * 8;
    const bool valid = row < p.L;
    float dx = 0.f, dy = 0.f;
#pragma unroll
    for (int ni = 0; ni < kTilesN; ++ni) {
      const int col = ni * 8 + (lane % 4) * 2;
      const float v0 = acc[ni][2 * half], v1 = acc[ni][2 * half + 1];
      if (valid) {
        *reinterpret_cast<float2*>(p.out + (z * p.L + row) * p.N + n0 + col) =
            make_float2(v0, v1);
        if (c != nullptr) {
          const float2 cv = __bfloat1622float2(
              *reinterpret_cast<const __nv_bfloat162*>(c + row * p.c_row + n0 + col));
          dx = fmaf(cv.x, v0, fmaf(cv.y, v1, dx));
          if (y != nullptr) dy = fmaf(cv.x, y[col], fmaf(cv.y, y[col + 1], dy));
        }
      }
    }
    if (c != nullptr) {  // the quad of lanes that shares the row holds its partial sums
      dx += __shfl_xor_sync(0xffffffffu, dx, 1);
      dx += __shfl_xor_sync(0xffffffffu, dx, 2);
      dy += __shfl_xor_sync(0xffffffffu, dy, 1);
      dy += __shfl_xor_sync(0xffffffffu, dy, 2);
      if (valid && lane % 4 == 0) {
        const int64_t idx = (n_tile * p.BH + z) * p.L + row;
        p.dot_x[idx] = dx;
        p.dot_y[idx] = dy;
      }
    }
  }
}

template <int kBN>
void launch(const Params& p, bool transpose, unsigned blocks, cudaStream_t stream) {
  if (transpose) {
    state_row_product_kernel<kBN, true><<<blocks, kThreads, 0, stream>>>(p);
  } else {
    state_row_product_kernel<kBN, false><<<blocks, kThreads, 0, stream>>>(p);
  }
}

}  // namespace

bool state_row_product_supported(const at::Tensor& a, int64_t N, const at::Tensor& c) {
  // K (the contracted dim) up to 256: the sizes this kernel has run on a GPU so far. A
  // DV = 512 state times dh or v rows (K = 512) takes the GEMM route.
  if (!is_bf16_row_operand(a) || a.size(3) > 256 || N % 64 != 0) return false;
  if (c.defined() && (!is_bf16_row_operand(c) || c.size(3) != N)) return false;
  return cuda_compute_capability(a.get_device()).first >= 8;
}

StateRowProduct state_row_product(const at::Tensor& a, const at::Tensor& state,
                                  bool transpose_state, double scale, bool split,
                                  const at::Tensor& c, const at::Tensor& y) {
  const int64_t B = a.size(0), H = a.size(1), L = a.size(2), K = a.size(3);
  const int64_t N = state.size(transpose_state ? 2 : 3);
  TORCH_CHECK(state_row_product_supported(a, N, c) &&
                  state.numel() == B * H * K * N && state.size(transpose_state ? 3 : 2) == K &&
                  (!y.defined() || y.numel() == B * H * N),
              "xlstm: internal error: state_row_product operands");
  // scale * state as bf16 hi + lo, contiguous, in the state's own layout.
  const auto [state_hi, state_lo] =
      split_bf16(state.to(at::kFloat).contiguous(), at::Tensor(), scale);
  const at::Tensor yc = y.defined() ? y.to(at::kFloat).contiguous() : at::Tensor();
  const auto opts = a.options().dtype(at::kFloat);
  const int bn = N % 128 == 0 ? 128 : 64;
  const int64_t tiles_n = N / bn, row_tiles = (L + kBM - 1) / kBM;
  StateRowProduct r;
  r.out = at::empty({B, H, L, N}, opts);
  at::Tensor dot_x, dot_y;  // (tiles_n, B, H, L) partial sums
  if (c.defined()) {
    dot_x = at::empty({tiles_n, B, H, L}, opts);
    dot_y = at::empty({tiles_n, B, H, L}, opts);
  }
  const int64_t blocks = B * H * tiles_n * row_tiles;
  if (blocks > 0) {
    TORCH_CHECK(blocks < (int64_t{1} << 31), "xlstm: state_row_product: too many rows");
    Params p;
    p.a = reinterpret_cast<const __nv_bfloat16*>(a.data_ptr());
    p.state_hi = reinterpret_cast<const __nv_bfloat16*>(state_hi.data_ptr());
    p.state_lo = split ? reinterpret_cast<const __nv_bfloat16*>(state_lo.data_ptr()) : nullptr;
    p.c = c.defined() ? reinterpret_cast<const __nv_bfloat16*>(c.data_ptr()) : nullptr;
    p.y = yc.defined() ? yc.data_ptr<float>() : nullptr;
    p.out = r.out.data_ptr<float>();
    p.dot_x = c.defined() ? dot_x.data_ptr<float>() : nullptr;
    p.dot_y = c.defined() ? dot_y.data_ptr<float>() : nullptr;
    p.a_batch = a.stride(0); p.a_head = a.stride(1); p.a_row = a.stride(2);
    if (c.defined()) {
      p.c_batch = c.stride(0); p.c_head = c.stride(1); p.c_row = c.stride(2);
    } else {
      p.c_batch = p.c_head = p.c_row = 0;
    }
    p.H = H;
    p.BH = B * H;
    p.L = static_cast<int>(L);
    p.K = static_cast<int>(K);
    p.N = static_cast<int>(N);
    c10::cuda::CUDAGuard guard(a.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
    if (bn == 128) {
      launch<128>(p, transpose_state, static_cast<unsigned>(blocks), stream);
    } else {
      launch<64>(p, transpose_state, static_cast<unsigned>(blocks), stream);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else if (c.defined()) {
    dot_x.zero_();
    dot_y.zero_();
  }
  if (c.defined()) {
    r.dot_x = tiles_n == 1 ? dot_x.squeeze(0) : dot_x.sum(0);
    r.dot_y = tiles_n == 1 ? dot_y.squeeze(0) : dot_y.sum(0);
  }
  return r;
}

}  // namespace xlstm
