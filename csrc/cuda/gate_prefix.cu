#include "cuda/gate_prefix.h"

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cub/block/block_scan.cuh>

#include <cmath>
#include <cstdint>

#include "cuda/kernel_inputs.h"

namespace xlstm {
namespace {

constexpr int kThreads = 256;

// torch's formula: min(x, 0) - log1p(exp(-|x|)).
__device__ double log_sigmoid(double x) { return fmin(x, 0.) - log1p(exp(-fabs(x))); }

struct Fmax {
  __device__ double operator()(double a, double b) const { return fmax(a, b); }
};

// One block per sequence; thread k owns the k-th of kThreads contiguous segments.
// Pass 1: the segment's sum of logsigmoid(f) and max of (i_j - F_j) with F local to
// the segment; block scans give each segment its prefix sum and the maximum over the
// segments before it. Pass 2 walks the segment again and writes F and m.
template <typename TF>
__global__ void gate_prefix_kernel(const TF* __restrict__ f, const float* __restrict__ ig,
                                   const float* __restrict__ m0, double* __restrict__ fcum,
                                   float* __restrict__ m, int64_t S) {
  using Scan = cub::BlockScan<double, kThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  const int64_t row = blockIdx.x;
  const int64_t per = (S + kThreads - 1) / kThreads;
  const int64_t begin = std::min(S, threadIdx.x * per), end = std::min(S, begin + per);
  f += row * S;
  fcum += row * S;
  const bool want_m = m != nullptr;

  double local_sum = 0., local_max = -INFINITY;
  for (int64_t j = begin; j < end; ++j) {
    local_sum += log_sigmoid(static_cast<double>(f[j]));
    if (want_m) local_max = fmax(local_max, static_cast<double>(ig[row * S + j]) - local_sum);
  }
  double prefix;
  Scan(scan_storage).ExclusiveSum(local_sum, prefix);
  double run = 0.;
  if (want_m) {
    __syncthreads();  // scan_storage is reused
    double before;
    Scan(scan_storage).ExclusiveScan(local_max - prefix, before, -INFINITY, Fmax());
    run = fmax(before, m0 != nullptr ? static_cast<double>(m0[row]) : 0.);
  }
  double F = prefix;
  for (int64_t j = begin; j < end; ++j) {
    F += log_sigmoid(static_cast<double>(f[j]));
    fcum[j] = F;
    if (want_m) {
      run = fmax(run, static_cast<double>(ig[row * S + j]) - F);
      m[row * S + j] = static_cast<float>(F + run);
    }
  }
}

// One block per sequence, thread k owning segment kThreads - 1 - k: the block's
// exclusive scan in thread order is then the sum over the segments after a thread's
// own (a suffix sum, as the forward's prefix sum reversed). Pass 2 walks the segment
// backwards, adding each d_s to that suffix.
template <typename TF>
__global__ void forget_gate_grad_kernel(const TF* __restrict__ f, const float* __restrict__ rowsum,
                                        const float* __restrict__ colsum,
                                        const float* __restrict__ row_add,
                                        const float* __restrict__ last_add, TF* __restrict__ df,
                                        int64_t S) {
  using Scan = cub::BlockScan<double, kThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  const int64_t row = blockIdx.x;
  const int64_t per = (S + kThreads - 1) / kThreads;
  const int64_t segment = kThreads - 1 - threadIdx.x;
  const int64_t begin = std::min(S, segment * per), end = std::min(S, begin + per);
  const int64_t base = row * S;
  auto d = [&](int64_t s) {
    double v = static_cast<double>(rowsum[base + s]) - static_cast<double>(colsum[base + s]);
    if (row_add != nullptr) v += static_cast<double>(row_add[base + s]);
    if (last_add != nullptr && s == S - 1) v += static_cast<double>(last_add[row]);
    return v;
  };
  double local_sum = 0.;
  for (int64_t s = begin; s < end; ++s) local_sum += d(s);
  double suffix;
  Scan(scan_storage).ExclusiveSum(local_sum, suffix);
  for (int64_t s = end - 1; s >= begin; --s) {
    suffix += d(s);
    // d logsigmoid(x) / dx = sigmoid(-x) = 1 / (1 + e^x)
    const double sig = 1. / (1. + exp(static_cast<double>(f[base + s])));
    df[base + s] = static_cast<TF>(suffix * sig);
  }
}

}  // namespace

GatePrefix gate_prefix(const at::Tensor& f, const at::Tensor& ig, const at::Tensor& m0,
                       bool want_m) {
  TORCH_CHECK(f.dim() == 3 && f.is_cuda(),
              "xlstm: internal error: gate_prefix takes (B, NH, S) CUDA gates");
  const at::Tensor fc = f.contiguous();
  const int64_t rows = f.size(0) * f.size(1), S = f.size(2);
  GatePrefix out;
  out.fcum = at::empty(f.sizes(), f.options().dtype(at::kDouble));
  if (want_m) {
    TORCH_CHECK(ig.is_contiguous() && ig.scalar_type() == at::kFloat && ig.sizes() == f.sizes() &&
                    (!m0.defined() || (m0.is_contiguous() && m0.scalar_type() == at::kFloat &&
                                       m0.numel() == rows)),
                "xlstm: internal error: gate_prefix operands");
    out.m = at::empty(f.sizes(), f.options().dtype(at::kFloat));
  }
  if (rows == 0 || S == 0) return out;
  TORCH_CHECK(rows < (int64_t{1} << 31), "xlstm: gate_prefix: too many sequences");
  c10::cuda::CUDAGuard guard(f.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, fc.scalar_type(), "gate_prefix", [&] {
    gate_prefix_kernel<scalar_t><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        fc.data_ptr<scalar_t>(), want_m ? ig.data_ptr<float>() : nullptr,
        want_m && m0.defined() ? m0.data_ptr<float>() : nullptr, out.fcum.data_ptr<double>(),
        want_m ? out.m.data_ptr<float>() : nullptr, S);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor forget_gate_grad(const at::Tensor& f, const at::Tensor& rowsum,
                            const at::Tensor& colsum, const at::Tensor& row_add,
                            const at::Tensor& last_add) {
  TORCH_CHECK(f.dim() == 3 && f.is_cuda(),
              "xlstm: internal error: forget_gate_grad takes (B, NH, S) CUDA gates");
  const int64_t rows = f.size(0) * f.size(1), S = f.size(2);
  TORCH_CHECK(is_rows_f32(rowsum, rows * S) && is_rows_f32(colsum, rows * S) &&
                  (!row_add.defined() || is_rows_f32(row_add, rows * S)) &&
                  (!last_add.defined() || is_rows_f32(last_add, rows)),
              "xlstm: internal error: forget_gate_grad operands");
  const at::Tensor fc = f.contiguous();
  at::Tensor df = at::empty(f.sizes(), f.options().memory_format(at::MemoryFormat::Contiguous));
  if (rows == 0 || S == 0) return df;
  TORCH_CHECK(rows < (int64_t{1} << 31), "xlstm: forget_gate_grad: too many sequences");
  c10::cuda::CUDAGuard guard(f.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, fc.scalar_type(), "forget_gate_grad", [&] {
    forget_gate_grad_kernel<scalar_t><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        fc.data_ptr<scalar_t>(), rowsum.data_ptr<float>(), colsum.data_ptr<float>(),
        row_add.defined() ? row_add.data_ptr<float>() : nullptr,
        last_add.defined() ? last_add.data_ptr<float>() : nullptr, df.data_ptr<scalar_t>(), S);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return df;
}

}  // namespace xlstm
