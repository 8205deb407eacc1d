#include "cuda/mlstm_bwd_prep.h"

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <climits>
#include <cstdint>

namespace xlstm {
namespace {

constexpr double kLog2eD = 1.4426950408889634;

template <typename T>
__global__ void row_terms_kernel(const T* __restrict__ dh, const T* __restrict__ h,
                                 int64_t dh_bs, int64_t dh_hs, int64_t dh_rs, int64_t h_bs,
                                 int64_t h_hs, int64_t h_rs, const double* __restrict__ fcum,
                                 const float* __restrict__ igate, const float* __restrict__ m_rows,
                                 const float* __restrict__ norm_rows, float* __restrict__ a2,
                                 float* __restrict__ c2, float* __restrict__ rden,
                                 float* __restrict__ db, int64_t NH, int64_t S, int DV,
                                 int64_t rows, float eps) {
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps exit together
  const int64_t bh = row / S, t = row % S, b = bh / NH, hd = bh % NH;
  const T* dh_row = dh + b * dh_bs + hd * dh_hs + t * dh_rs;
  const T* h_row = h + b * h_bs + hd * h_hs + t * h_rs;
  float dot = 0.f;
  for (int d = lane; d < DV; d += 32) dot += float(dh_row[d]) * float(h_row[d]);
  for (int o = 16; o > 0; o /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, o);
  if (lane != 0) return;
  const float m = m_rows[row], nb = norm_rows[row];
  const float ab = fabsf(nb), floor_v = expf(-m);
  const float den = (ab != ab ? ab : fmaxf(ab, floor_v)) + eps;  // NaN b stays NaN
  const float r = 1.f / den;
  const float active = ab > floor_v ? (nb > 0.f ? 1.f : (nb < 0.f ? -1.f : 0.f)) : 0.f;
  rden[row] = r;
  db[row] = -dot * r * active;
  const double F = fcum[row];
  a2[row] = float((F - double(m)) * kLog2eD);
  c2[row] = float((double(igate[row]) - F) * kLog2eD);
}

}  // namespace

BackwardRowTerms mlstm_backward_row_terms(const at::Tensor& dh, const at::Tensor& h,
                                          const at::Tensor& fcum, const at::Tensor& igate,
                                          const at::Tensor& m_rows, const at::Tensor& norm_rows,
                                          double eps) {
  TORCH_CHECK(dh.scalar_type() == h.scalar_type() && dh.stride(-1) == 1 && h.stride(-1) == 1,
              "mlstm backward row terms: dh and h need one dtype and a unit last stride");
  const int64_t B = dh.size(0), NH = dh.size(1), S = dh.size(2);
  const int DV = static_cast<int>(dh.size(3));
  const auto opts = m_rows.options().dtype(at::kFloat);
  BackwardRowTerms out{at::empty({B, NH, S}, opts), at::empty({B, NH, S}, opts),
                       at::empty({B, NH, S}, opts), at::empty({B, NH, S}, opts)};
  const int64_t rows = B * NH * S;
  if (rows == 0) return out;
  c10::cuda::CUDAGuard device_guard(dh.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  constexpr int kThreads = 256;
  const int64_t blocks = (rows * 32 + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= INT_MAX, "mlstm backward row terms: too many rows (", rows, ")");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dh.scalar_type(), "mlstm_row_terms", [&] {
    row_terms_kernel<scalar_t><<<unsigned(blocks), kThreads, 0, stream>>>(
        dh.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), dh.stride(0), dh.stride(1),
        dh.stride(2), h.stride(0), h.stride(1), h.stride(2), fcum.data_ptr<double>(),
        igate.data_ptr<float>(), m_rows.data_ptr<float>(), norm_rows.data_ptr<float>(),
        out.a2.data_ptr<float>(), out.c2.data_ptr<float>(), out.rden.data_ptr<float>(),
        out.db.data_ptr<float>(), NH, S, DV, rows, static_cast<float>(eps));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace xlstm
