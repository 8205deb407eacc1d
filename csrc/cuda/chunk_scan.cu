#include "cuda/chunk_scan.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

namespace xlstm {
namespace {

constexpr int kThreads = 256;

// One thread per 4 consecutive elements of one row; the N steps run in order. The
// loop reads x once and writes out once: bandwidth-bound, with N independent loads
// that the unrolled loop issues ahead of the dependent FMAs.
__global__ void chunk_linear_scan_kernel(const float4* __restrict__ x,
                                         const float* __restrict__ decay,
                                         const float4* __restrict__ init,
                                         float4* __restrict__ out, float4* __restrict__ last,
                                         int n_chunks, int64_t e4, bool reverse) {
  const int64_t row = blockIdx.x;
  const int64_t e = static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x;
  if (e >= e4) return;
  float4 acc = init != nullptr ? init[row * e4 + e] : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
  for (int s = 0; s < n_chunks; ++s) {
    const int k = reverse ? n_chunks - 1 - s : s;
    const int64_t at = (row * n_chunks + k) * e4 + e;
    out[at] = acc;
    const float a = decay[row * n_chunks + k];
    const float4 xv = x[at];
    acc = make_float4(fmaf(a, acc.x, xv.x), fmaf(a, acc.y, xv.y), fmaf(a, acc.z, xv.z),
                      fmaf(a, acc.w, xv.w));
  }
  last[row * e4 + e] = acc;
}

}  // namespace

std::pair<at::Tensor, at::Tensor> chunk_linear_scan(const at::Tensor& x, const at::Tensor& decay,
                                                    const at::Tensor& init, bool reverse) {
  TORCH_CHECK(x.dim() == 3 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "chunk_linear_scan: x must be a contiguous (R, N, E) fp32 tensor");
  const int64_t R = x.size(0), N = x.size(1), E = x.size(2);
  TORCH_CHECK(E % 4 == 0, "chunk_linear_scan: E must be a multiple of 4, got ", E);
  TORCH_CHECK(decay.scalar_type() == at::kFloat && decay.is_contiguous() &&
                  decay.numel() == R * N,
              "chunk_linear_scan: decay must be a contiguous (R, N) fp32 tensor");
  TORCH_CHECK(!init.defined() || (init.scalar_type() == at::kFloat && init.is_contiguous() &&
                                  init.numel() == R * E),
              "chunk_linear_scan: init must be a contiguous (R, E) fp32 tensor");
  at::Tensor out = at::empty_like(x);
  at::Tensor last = at::empty({R, E}, x.options());
  if (R == 0 || E == 0) return {out, last};
  if (N == 0) {
    last.copy_(init.defined() ? init.view({R, E}) : at::zeros({R, E}, x.options()));
    return {out, last};
  }
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t e4 = E / 4;
  TORCH_CHECK((e4 + kThreads - 1) / kThreads <= 65535, "chunk_linear_scan: E too large: ", E);
  const dim3 grid(static_cast<unsigned>(R), static_cast<unsigned>((e4 + kThreads - 1) / kThreads));
  chunk_linear_scan_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream().stream()>>>(
      reinterpret_cast<const float4*>(x.data_ptr<float>()), decay.data_ptr<float>(),
      init.defined() ? reinterpret_cast<const float4*>(init.data_ptr<float>()) : nullptr,
      reinterpret_cast<float4*>(out.data_ptr<float>()),
      reinterpret_cast<float4*>(last.data_ptr<float>()), static_cast<int>(N), e4, reverse);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, last};
}

}  // namespace xlstm
