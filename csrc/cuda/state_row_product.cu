#include "cuda/state_row_product.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/kernel_inputs.h"
#include "cuda/mma_sm80.cuh"
#include "cuda_device_info.h"

namespace xlstm {
namespace {

// CTA tile: 64 rows x kBN state columns, 4 warps of 16 rows each; K (the contracted dim)
// in steps of 32, double-buffered. Shared-memory rows hold 32 bf16 (4 chunks of 16 B)
// and are swizzled so that ldmatrix's 8 rows and a warp's stores hit distinct banks.
constexpr int kBM = 64;
constexpr int kBK = 32;
constexpr int kChunks = kBK / 8;
constexpr int kThreads = 128;

struct Params {
  const __nv_bfloat16* a;
  const float* state;        // (B, H, K, N), or (B, H, N, K) if transpose; contiguous
  const __nv_bfloat16* c;    // (B, H, L, N) or null
  const float* y;            // (B, H, N) or null
  float* out;                // (B, H, L, N)
  float* dot_x;              // (tiles_n, B * H, L) or null
  float* dot_y;
  int64_t a_batch, a_head, a_row;
  int64_t c_batch, c_head, c_row;
  int64_t H, BH;
  int L, K, N;
  float scale;
  bool transpose, split;
};

__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * kChunks + (chunk ^ ((row >> 1) & 3));
}

template <int kBN>
__global__ void __launch_bounds__(kThreads) state_row_product_kernel(const Params p) {
  constexpr int kTilesN = kBN / 8;
  constexpr int kAChunksPerThread = kBM * kChunks / kThreads;  // 2
  constexpr int kBChunksPerThread = kBN * kChunks / kThreads;  // 2 or 4
  __shared__ uint4 s_a[2][kBM * kChunks];
  __shared__ uint4 s_hi[2][kBN * kChunks];
  __shared__ uint4 s_lo[2][kBN * kChunks];

  const int row_tiles = (p.L + kBM - 1) / kBM, tiles_n = p.N / kBN;
  const int row_tile = static_cast<int>(blockIdx.x % row_tiles);
  const int64_t rest = blockIdx.x / row_tiles;
  const int n_tile = static_cast<int>(rest % tiles_n);
  const int64_t z = rest / tiles_n, bi = z / p.H, head = z % p.H;
  const int r0 = row_tile * kBM, n0 = n_tile * kBN;
  const __nv_bfloat16* a = p.a + bi * p.a_batch + head * p.a_head;
  const float* state = p.state + z * p.K * p.N;

  const int t = threadIdx.x, lane = t % 32, warp = t / 32;

  auto load_a = [&](int k0, int stage) {
#pragma unroll
    for (int x = 0; x < kAChunksPerThread; ++x) {
      const int cidx = t + x * kThreads, row = cidx / kChunks, ch = cidx % kChunks;
      const bool valid = r0 + row < p.L;
      const __nv_bfloat16* src = valid ? a + (r0 + row) * p.a_row + k0 + ch * 8 : a;
      cp_async_16(smem_address(&s_a[stage][swizzle(row, ch)]), src, valid);
    }
  };
  // The thread's share of M[k0 .. k0+31][n0 .. n0+kBN-1] (M = state or its transpose),
  // 8 consecutive k of one column n per chunk: read as fp32, split on the way to smem.
  float b_reg[kBChunksPerThread][8];
  auto chunk_of = [&](int x, int& n, int& ch) {
    const int cidx = t + x * kThreads;
    if (p.transpose) {  // 8 consecutive k are contiguous: one 32-byte read per chunk
      n = cidx / kChunks;
      ch = cidx % kChunks;
    } else {            // consecutive threads take consecutive n: coalesced per k
      n = cidx % kBN;
      ch = cidx / kBN;
    }
  };
  auto load_b = [&](int k0) {
#pragma unroll
    for (int x = 0; x < kBChunksPerThread; ++x) {
      int n, ch;
      chunk_of(x, n, ch);
      const int k = k0 + ch * 8;
      if (p.transpose) {
        const float4* src = reinterpret_cast<const float4*>(state + (n0 + n) * p.K + k);
        const float4 u = src[0], w = src[1];
        b_reg[x][0] = u.x; b_reg[x][1] = u.y; b_reg[x][2] = u.z; b_reg[x][3] = u.w;
        b_reg[x][4] = w.x; b_reg[x][5] = w.y; b_reg[x][6] = w.z; b_reg[x][7] = w.w;
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) b_reg[x][e] = state[(k + e) * p.N + n0 + n];
      }
    }
  };
  auto store_b = [&](int stage) {
#pragma unroll
    for (int x = 0; x < kBChunksPerThread; ++x) {
      int n, ch;
      chunk_of(x, n, ch);
      uint32_t hi[4], lo[4];
#pragma unroll
      for (int e = 0; e < 8; e += 2) {
        split_bf16x2(b_reg[x][e] * p.scale, b_reg[x][e + 1] * p.scale, hi[e / 2], lo[e / 2]);
      }
      s_hi[stage][swizzle(n, ch)] = make_uint4(hi[0], hi[1], hi[2], hi[3]);
      if (p.split) s_lo[stage][swizzle(n, ch)] = make_uint4(lo[0], lo[1], lo[2], lo[3]);
    }
  };

  float acc[kTilesN][4];
#pragma unroll
  for (int ni = 0; ni < kTilesN; ++ni)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[ni][e] = 0.f;

  auto mma_part = [&](const uint4* s_b, const uint32_t (&a_frag)[4], int kk) {
    const int i = lane / 8;
#pragma unroll
    for (int nj = 0; nj < kTilesN / 2; ++nj) {
      uint32_t bq[4];
      const int n = nj * 16 + (i / 2) * 8 + lane % 8, ch = (kk + (i % 2) * 8) / 8;
      ldmatrix_x4(bq, smem_address(&s_b[swizzle(n, ch)]));
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
      ldmatrix_x4(a_frag, smem_address(&s_a[stage][swizzle(row, ch)]));
      mma_part(s_hi[stage], a_frag, kk);
      if (p.split) mma_part(s_lo[stage], a_frag, kk);
    }
  };

  const int steps = p.K / kBK;
  load_a(0, 0);
  load_b(0);
  store_b(0);
  cp_async_commit_and_wait_all();
  __syncthreads();
  for (int s = 0; s < steps; ++s) {
    const int stage = s & 1;
    const bool more = s + 1 < steps;
    if (more) {  // the next step's loads fly while this one computes
      load_a((s + 1) * kBK, stage ^ 1);
      load_b((s + 1) * kBK);
    }
    compute(stage);
    if (more) {
      store_b(stage ^ 1);
      cp_async_commit_and_wait_all();
    }
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
        *reinterpret_cast<float2*>(p.out + (z * p.L + row) * p.N + n0 + col) = make_float2(v0, v1);
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

}  // namespace

bool state_row_product_supported(const at::Tensor& a, int64_t N, const at::Tensor& c) {
  if (!a.is_cuda() || a.scalar_type() != at::kBFloat16 || a.dim() != 4) return false;
  if (a.size(3) % 64 != 0 || N % 64 != 0 || !is_vector_aligned(a)) return false;
  if (c.defined() && (c.scalar_type() != at::kBFloat16 || c.dim() != 4 || c.size(3) != N ||
                      !is_vector_aligned(c))) {
    return false;
  }
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
  const at::Tensor st = state.to(at::kFloat).contiguous();
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
    p.state = st.data_ptr<float>();
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
    p.scale = static_cast<float>(scale);
    p.transpose = transpose_state;
    p.split = split;
    c10::cuda::CUDAGuard guard(a.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
    if (bn == 128) {
      state_row_product_kernel<128><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
    } else {
      state_row_product_kernel<64><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
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
