#include "cuda/normalizer_grad.h"

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <type_traits>

#include "cuda/kernel_inputs.h"
#include "cuda/normalizer_terms.h"

namespace xlstm {
namespace {

constexpr int kThreads = 256;

// One warp per sequence: M = max_j |i_j| + |F_{S-1}| + |m0| (F is a running sum of
// logsigmoid terms <= 0, so its last entry has the largest magnitude; a NaN or inf
// gate makes it non-finite). A flagged sequence claims a slot of the list.
__global__ void row_pass_sequences_kernel(const float* __restrict__ ig,
                                          const double* __restrict__ fcum,
                                          const float* __restrict__ m0, int64_t seqs,
                                          int64_t S, float limit, int* __restrict__ flags,
                                          int* __restrict__ list, int* __restrict__ count) {
  const int lane = threadIdx.x % 32;
  const int64_t seq = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
  if (seq >= seqs) return;  // whole warps
  float imax = 0.f;
  bool finite = true;
  for (int64_t t = lane; t < S; t += 32) {
    const float a = fabsf(ig[seq * S + t]);
    finite = finite && a <= FLT_MAX;  // false for inf and NaN
    imax = fmaxf(imax, a);
  }
  for (int off = 16; off > 0; off /= 2) imax = fmaxf(imax, __shfl_xor_sync(0xffffffffu, imax, off));
  finite = __all_sync(0xffffffffu, finite);
  if (lane != 0) return;
  const double mag = static_cast<double>(imax) + fabs(fcum[seq * S + S - 1]) +
                     (m0 != nullptr ? fabs(static_cast<double>(m0[seq])) : 0.);
  const int flag = !(finite && mag <= static_cast<double>(limit));  // NaN mag: flagged
  flags[seq] = flag;
  if (flag) list[atomicAdd(count, 1)] = static_cast<int>(seq);
}

// A group of kLanes lanes per row (a power of two dividing 32) reads dh and h in
// 16-byte vectors, sums dh . h in fp32 and reduces with shuffles; its first lane writes
// the row's rden and db. Rows of flagged sequences take dhu and bsum instead (and skip
// the reads). Memory-bound: each row of dh and h is read once.
template <typename T, int kLanes>
__global__ void normalizer_grad_kernel(const T* __restrict__ dh, const T* __restrict__ h,
                                       const float* __restrict__ norm_rows,
                                       const float* __restrict__ m,
                                       const int* __restrict__ flags,
                                       const float* __restrict__ dhu,
                                       const float* __restrict__ bsum, int64_t rows, int64_t S,
                                       int cols, float eps, float* __restrict__ rden,
                                       float* __restrict__ db) {
  constexpr int kVec = 16 / sizeof(T);
  const int lane = threadIdx.x % kLanes;
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kLanes;
  // Rows past the end still take part in their group's shuffles.
  const bool valid = r < rows;
  const bool row_pass = valid && flags[r / S] != 0;
  float dot = 0.f;
  if (valid && !row_pass) {
    const T* dh_row = dh + r * cols;
    const T* h_row = h + r * cols;
    for (int c = lane * kVec; c < cols; c += kLanes * kVec) {
      const uint4 dv = *reinterpret_cast<const uint4*>(dh_row + c);
      const uint4 hv = *reinterpret_cast<const uint4*>(h_row + c);
      const T* dx = reinterpret_cast<const T*>(&dv);
      const T* hx = reinterpret_cast<const T*>(&hv);
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        dot = fmaf(static_cast<float>(dx[e]), static_cast<float>(hx[e]), dot);
      }
    }
  }
#pragma unroll
  for (int off = kLanes / 2; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
  if (!valid || lane != 0) return;
  const NormalizerTerms nt = row_pass ? normalizer_terms(bsum[r], m[r], eps, dhu[r], true)
                                      : normalizer_terms(norm_rows[r], m[r], eps, dot, false);
  rden[r] = nt.rden;
  db[r] = nt.db;
}

// One thread per row, all rows from the row pass.
__global__ void normalizer_grad_from_row_pass_kernel(const float* __restrict__ dhu,
                                                     const float* __restrict__ bsum,
                                                     const float* __restrict__ m, int64_t rows,
                                                     float eps, float* __restrict__ rden,
                                                     float* __restrict__ db) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (r >= rows) return;
  const NormalizerTerms nt = normalizer_terms(bsum[r], m[r], eps, dhu[r], true);
  rden[r] = nt.rden;
  db[r] = nt.db;
}

template <typename T>
void launch_normalizer_grad(const at::Tensor& dh, const at::Tensor& h,
                            const at::Tensor& norm_rows, const at::Tensor& m, float eps,
                            const RowPassSequences& row_pass, const at::Tensor& dhu,
                            const at::Tensor& bsum, at::Tensor& rden, at::Tensor& db,
                            cudaStream_t stream) {
  const int64_t cols = h.size(-1), rows = h.numel() / cols, S = h.size(-2);
  constexpr int kVec = 16 / sizeof(T);
  const int64_t vecs = cols / kVec;
  auto go = [&](auto lanes_c) {
    constexpr int kLanes = decltype(lanes_c)::value;
    const int64_t blocks = (rows * kLanes + kThreads - 1) / kThreads;
    normalizer_grad_kernel<T, kLanes><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<const T*>(dh.data_ptr()), static_cast<const T*>(h.data_ptr()),
        norm_rows.data_ptr<float>(), m.data_ptr<float>(), row_pass.flags.data_ptr<int>(),
        dhu.data_ptr<float>(), bsum.data_ptr<float>(), rows, S, static_cast<int>(cols), eps,
        rden.data_ptr<float>(), db.data_ptr<float>());
  };
  // As many lanes per row as there are 16-byte vectors, up to a warp.
  if (vecs >= 32) go(std::integral_constant<int, 32>{});
  else if (vecs >= 16) go(std::integral_constant<int, 16>{});
  else if (vecs >= 8) go(std::integral_constant<int, 8>{});
  else if (vecs >= 4) go(std::integral_constant<int, 4>{});
  else if (vecs >= 2) go(std::integral_constant<int, 2>{});
  else go(std::integral_constant<int, 1>{});
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

RowPassSequences row_pass_sequences(const at::Tensor& ig, const at::Tensor& fcum,
                                    const at::Tensor& m0) {
  const int64_t S = ig.size(-1), seqs = ig.numel() / std::max<int64_t>(S, 1);
  TORCH_CHECK(is_rows_f32(ig, seqs * S) && fcum.is_contiguous() &&
                  fcum.scalar_type() == at::kDouble && fcum.numel() == seqs * S &&
                  (!m0.defined() || is_rows_f32(m0, seqs)),
              "xlstm: internal error: row_pass_sequences inputs");
  c10::cuda::CUDAGuard device_guard(ig.device());
  const auto int_opts = ig.options().dtype(at::kInt);
  RowPassSequences r{at::empty({seqs}, int_opts), at::empty({seqs}, int_opts),
                     at::zeros({1}, int_opts)};
  if (seqs == 0 || S == 0) return r;
  const int64_t blocks = (seqs * 32 + kThreads - 1) / kThreads;
  row_pass_sequences_kernel<<<static_cast<unsigned>(blocks), kThreads, 0,
                              c10::cuda::getCurrentCUDAStream().stream()>>>(
      ig.data_ptr<float>(), fcum.data_ptr<double>(), m0.defined() ? m0.data_ptr<float>() : nullptr,
      seqs, S, kForwardRowsMaxLogMagnitude, r.flags.data_ptr<int>(), r.list.data_ptr<int>(),
      r.count.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return r;
}

std::pair<at::Tensor, at::Tensor> normalizer_grad(const at::Tensor& dh_in, const at::Tensor& h_in,
                                                  const at::Tensor& norm_rows,
                                                  const at::Tensor& m, double eps,
                                                  const RowPassSequences& row_pass,
                                                  const at::Tensor& dhu,
                                                  const at::Tensor& bsum) {
  const int64_t rows = h_in.numel() / std::max<int64_t>(h_in.size(-1), 1);
  TORCH_CHECK(dh_in.sizes() == h_in.sizes() && dh_in.scalar_type() == h_in.scalar_type() &&
                  h_in.dim() == 4,
              "xlstm: internal error: normalizer_grad: dh and h differ");
  TORCH_CHECK(is_rows_f32(norm_rows, rows) && is_rows_f32(m, rows) && is_rows_f32(dhu, rows) &&
                  is_rows_f32(bsum, rows) && row_pass.flags.defined() &&
                  row_pass.flags.numel() * h_in.size(-2) == rows,
              "xlstm: internal error: normalizer_grad: row statistics");
  TORCH_CHECK(h_in.size(-1) % (16 / h_in.element_size()) == 0,
              "xlstm: internal error: normalizer_grad: DV is not a whole number of 16 bytes");
  c10::cuda::CUDAGuard device_guard(h_in.device());
  // The kernel walks contiguous rows in 16-byte vectors.
  const at::Tensor dh = vector_aligned(dh_in.contiguous()), h = vector_aligned(h_in.contiguous());
  at::Tensor rden = at::empty_like(norm_rows), db = at::empty_like(norm_rows);
  if (rows == 0) return {rden, db};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "normalizer_grad", [&] {
    launch_normalizer_grad<scalar_t>(dh, h, norm_rows, m, static_cast<float>(eps), row_pass, dhu,
                                     bsum, rden, db, stream);
  });
  return {rden, db};
}

std::pair<at::Tensor, at::Tensor> normalizer_grad_from_row_pass(const at::Tensor& dhu,
                                                                const at::Tensor& bsum,
                                                                const at::Tensor& m, double eps) {
  const int64_t rows = m.numel();
  TORCH_CHECK(is_rows_f32(dhu, rows) && is_rows_f32(bsum, rows) && is_rows_f32(m, rows),
              "xlstm: internal error: normalizer_grad_from_row_pass: row statistics");
  c10::cuda::CUDAGuard device_guard(m.device());
  at::Tensor rden = at::empty_like(m), db = at::empty_like(m);
  if (rows == 0) return {rden, db};
  const int64_t blocks = (rows + kThreads - 1) / kThreads;
  normalizer_grad_from_row_pass_kernel<<<static_cast<unsigned>(blocks), kThreads, 0,
                                         c10::cuda::getCurrentCUDAStream().stream()>>>(
      dhu.data_ptr<float>(), bsum.data_ptr<float>(), m.data_ptr<float>(), rows,
      static_cast<float>(eps), rden.data_ptr<float>(), db.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {rden, db};
}

}  // namespace xlstm
