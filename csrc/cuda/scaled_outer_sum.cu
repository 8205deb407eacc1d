#include "cuda/scaled_outer_sum.h"

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

// CTA tile: 64 columns of a (rows of out) x kBN columns of b, 4 warps as 2 x 2, each
// 32 x kBN/2; the sequence goes through in steps of kRows rows, double-buffered.
constexpr int kBM = 64;
constexpr int kRows = 32;
constexpr int kThreads = 128;

struct Params {
  const __nv_bfloat16* a;
  const __nv_bfloat16* b;
  const float* r;  // (B, H, L) contiguous
  float* out;      // (B, H, DA, DB) contiguous
  float* row_sum;  // (B, H, DA) contiguous, or null
  int64_t a_batch, a_head, a_row;  // element strides
  int64_t b_batch, b_head, b_row;
  int64_t H;
  int L, DA, DB;
};

template <int kBN>
__global__ void __launch_bounds__(kThreads, 3) scaled_outer_sum_kernel(const Params p) {
  constexpr int kChunksA = kBM / 8, kChunksB = kBN / 8;
  constexpr int kWarpN = kBN / 2;        // columns of out per warp
  constexpr int kTilesN = kWarpN / 8;    // m16n8 tiles per warp along n
  constexpr int kAPerThread = kRows * kChunksA / kThreads;  // 2
  constexpr int kBPerThread = kRows * kChunksB / kThreads;  // 2 or 4
  static_assert(kAPerThread == 2 && kChunksA == 8);
  __shared__ uint4 s_hi[2][kRows * kChunksA], s_lo[2][kRows * kChunksA];
  __shared__ uint4 s_b[2][kRows * kChunksB];
  __shared__ float s_sum[kThreads][8];

  const int tiles_n = p.DB / kBN;
  const int tiles = (p.DA / kBM) * tiles_n;
  const int64_t z = blockIdx.x / tiles;
  const int tile = static_cast<int>(blockIdx.x % tiles);
  const int m0 = (tile / tiles_n) * kBM, n0 = (tile % tiles_n) * kBN;
  const int64_t bi = z / p.H, head = z % p.H;
  const __nv_bfloat16* a = p.a + bi * p.a_batch + head * p.a_head + m0;
  const __nv_bfloat16* b = p.b + bi * p.b_batch + head * p.b_head + n0;
  const float* r = p.r + z * p.L;

  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  const int warp_m = warp / 2, warp_n = warp % 2;
  const int a_chunk = t % kChunksA;  // this thread's 8 columns of a, in every step

  uint4 a_reg[kAPerThread];
  float r_reg[kAPerThread];
  float col_sum[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  auto load_a = [&](int j0) {
#pragma unroll
    for (int x = 0; x < kAPerThread; ++x) {
      const int row = (t + x * kThreads) / kChunksA, j = j0 + row;
      a_reg[x] = j < p.L ? *reinterpret_cast<const uint4*>(a + j * p.a_row + a_chunk * 8)
                         : make_uint4(0, 0, 0, 0);
      r_reg[x] = j < p.L ? r[j] : 0.f;
    }
  };
  // r_j a_j in fp32, split into hi = bf16(v) and lo = bf16(v - hi).
  auto store_a = [&](int stage) {
#pragma unroll
    for (int x = 0; x < kAPerThread; ++x) {
      const int row = (t + x * kThreads) / kChunksA;
      const __nv_bfloat16* in = reinterpret_cast<const __nv_bfloat16*>(&a_reg[x]);
      uint32_t hi[4], lo[4];
#pragma unroll
      for (int e = 0; e < 8; e += 2) {
        const float v0 = __bfloat162float(in[e]) * r_reg[x];
        const float v1 = __bfloat162float(in[e + 1]) * r_reg[x];
        col_sum[e] += v0;
        col_sum[e + 1] += v1;
        split_bf16x2(v0, v1, hi[e / 2], lo[e / 2]);
      }
      const int idx = swizzled_chunk<kChunksA>(row, a_chunk);
      s_hi[stage][idx] = make_uint4(hi[0], hi[1], hi[2], hi[3]);
      s_lo[stage][idx] = make_uint4(lo[0], lo[1], lo[2], lo[3]);
    }
  };
  auto load_b = [&](int j0, int stage) {
#pragma unroll
    for (int x = 0; x < kBPerThread; ++x) {
      const int c = t + x * kThreads, row = c / kChunksB, chunk = c % kChunksB, j = j0 + row;
      const __nv_bfloat16* src = j < p.L ? b + j * p.b_row + chunk * 8 : b;
      const int idx = swizzled_chunk<kChunksB>(row, chunk);
      cp_async_16(smem_address(&s_b[stage][idx]), src, j < p.L);
    }
  };

  float acc[2][kTilesN][4];
  for (int mi = 0; mi < 2; ++mi)
    for (int ni = 0; ni < kTilesN; ++ni)
      for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;

  // One step of kRows rows: out (d, e) += sum_j A[d][j] B[j][e] with A = (r a)^T in hi and
  // lo parts. ldmatrix .trans reads both operands from their row-major [j][column] tiles.
  auto compute = [&](int stage) {
#pragma unroll
    for (int k0 = 0; k0 < kRows; k0 += 16) {
      const int i = lane / 8, row8 = lane % 8;
      uint32_t a_hi[2][4], a_lo[2][4];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
        const int col = warp_m * 32 + mi * 16 + (i % 2) * 8;
        const int row = k0 + (i / 2) * 8 + row8;
        const int idx = swizzled_chunk<kChunksA>(row, col / 8);
        ldmatrix_x4_trans(a_hi[mi], smem_address(&s_hi[stage][idx]));
        ldmatrix_x4_trans(a_lo[mi], smem_address(&s_lo[stage][idx]));
      }
#pragma unroll
      for (int nj = 0; nj < kTilesN / 2; ++nj) {
        uint32_t bq[4];
        const int col = warp_n * kWarpN + nj * 16 + (i / 2) * 8;
        const int row = k0 + (i % 2) * 8 + row8;
        const int idx = swizzled_chunk<kChunksB>(row, col / 8);
        ldmatrix_x4_trans(bq, smem_address(&s_b[stage][idx]));
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          mma_bf16_16816(acc[mi][2 * nj], a_hi[mi], bq[0], bq[1]);
          mma_bf16_16816(acc[mi][2 * nj + 1], a_hi[mi], bq[2], bq[3]);
          mma_bf16_16816(acc[mi][2 * nj], a_lo[mi], bq[0], bq[1]);
          mma_bf16_16816(acc[mi][2 * nj + 1], a_lo[mi], bq[2], bq[3]);
        }
      }
    }
  };

  const int steps = (p.L + kRows - 1) / kRows;
  load_a(0);
  load_b(0, 0);
  store_a(0);
  cp_async_commit_and_wait_all();
  __syncthreads();
  for (int s = 0; s < steps; ++s) {
    const int stage = s & 1;
    const bool more = s + 1 < steps;
    if (more) {  // the next step's loads fly while this one computes
      load_a((s + 1) * kRows);
      load_b((s + 1) * kRows, stage ^ 1);
    }
    compute(stage);
    if (more) {
      store_a(stage ^ 1);
      cp_async_commit_and_wait_all();
    }
    __syncthreads();
  }

  // out rows d = m0 + warp_m * 32 + mi * 16 + lane / 4 (+ 8), columns e = n0 + ...
  float* out = p.out + z * p.DA * p.DB;
  for (int mi = 0; mi < 2; ++mi) {
    for (int ni = 0; ni < kTilesN; ++ni) {
      const int d = m0 + warp_m * 32 + mi * 16 + lane / 4;
      const int e = n0 + warp_n * kWarpN + ni * 8 + (lane % 4) * 2;
      *reinterpret_cast<float2*>(out + static_cast<int64_t>(d) * p.DB + e) =
          make_float2(acc[mi][ni][0], acc[mi][ni][1]);
      *reinterpret_cast<float2*>(out + static_cast<int64_t>(d + 8) * p.DB + e) =
          make_float2(acc[mi][ni][2], acc[mi][ni][3]);
    }
  }

  if (p.row_sum != nullptr && n0 == 0) {
    // Column c of the tile: the 16 threads with t % 8 == c / 8 hold its partial sums.
    for (int e = 0; e < 8; ++e) s_sum[t][e] = col_sum[e];
    __syncthreads();
    if (t < kBM) {
      float s = 0.f;
      for (int k = t / 8; k < kThreads; k += kChunksA) s += s_sum[k][t % 8];
      p.row_sum[z * p.DA + m0 + t] = s;
    }
  }
}

}  // namespace

bool scaled_outer_sum_supported(const at::Tensor& a, const at::Tensor& b) {
  static_assert(kBM == 64, "is_bf16_row_operand tiles DA by 64");
  return is_bf16_row_operand(a) && is_bf16_row_operand(b) &&
         cuda_compute_capability(a.get_device()).first >= 8;
}

std::pair<at::Tensor, at::Tensor> scaled_outer_sum(const at::Tensor& a, const at::Tensor& r,
                                                   const at::Tensor& b, bool want_row_sum) {
  TORCH_CHECK(scaled_outer_sum_supported(a, b), "xlstm: internal error: scaled_outer_sum operands");
  const int64_t B = a.size(0), H = a.size(1), L = a.size(2), DA = a.size(3), DB = b.size(3);
  TORCH_CHECK(b.size(0) == B && b.size(1) == H && b.size(2) == L && r.numel() == B * H * L,
              "xlstm: internal error: scaled_outer_sum shapes");
  const at::Tensor rc = r.to(at::kFloat).contiguous();
  const auto opts = a.options().dtype(at::kFloat);
  at::Tensor out = at::empty({B, H, DA, DB}, opts);
  at::Tensor sum = want_row_sum ? at::empty({B, H, DA}, opts) : at::Tensor();
  if (B * H == 0) return {out, sum};
  if (L == 0) {
    out.zero_();
    if (sum.defined()) sum.zero_();
    return {out, sum};
  }
  Params p;
  p.a = reinterpret_cast<const __nv_bfloat16*>(a.data_ptr());
  p.b = reinterpret_cast<const __nv_bfloat16*>(b.data_ptr());
  p.r = rc.data_ptr<float>();
  p.out = out.data_ptr<float>();
  p.row_sum = sum.defined() ? sum.data_ptr<float>() : nullptr;
  p.a_batch = a.stride(0); p.a_head = a.stride(1); p.a_row = a.stride(2);
  p.b_batch = b.stride(0); p.b_head = b.stride(1); p.b_row = b.stride(2);
  p.H = H;
  p.L = static_cast<int>(L);
  p.DA = static_cast<int>(DA);
  p.DB = static_cast<int>(DB);
  c10::cuda::CUDAGuard guard(a.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const int bn = DB % 128 == 0 ? 128 : 64;
  const int64_t blocks = B * H * (DA / kBM) * (DB / bn);
  TORCH_CHECK(blocks < (int64_t{1} << 31), "xlstm: scaled_outer_sum: too many sequences");
  if (bn == 128) {
    scaled_outer_sum_kernel<128><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  } else {
    scaled_outer_sum_kernel<64><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, sum};
}

}  // namespace xlstm
