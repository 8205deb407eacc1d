#include "cuda/state_gemm.h"

#include "cuda/scaled_outer_sum.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

// at::bmm / at::baddbmm_out with an out_dtype (bf16 inputs, fp32 result): torch >= 2.8.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 8)
#define XLSTM_HAS_OUT_DTYPE_GEMM 1
#else
#define XLSTM_HAS_OUT_DTYPE_GEMM 0
#endif

namespace xlstm {
namespace {


constexpr int kThreads = 256;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

// hi = bf16(v), lo = bf16(v - hi) for v = x[r, d] * row_scale[r] * scale, one element per
// thread step (coalesced, one read and two bf16 writes per element).
template <typename T>
__global__ void split_bf16_kernel(const T* __restrict__ x, int64_t row_stride,
                                  const float* __restrict__ row_scale, float scale, int64_t rows,
                                  int64_t cols, __nv_bfloat16* __restrict__ hi,
                                  __nv_bfloat16* __restrict__ lo) {
  const int64_t n = rows * cols;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = idx / cols, c = idx - r * cols;
    float v = to_float(x[r * row_stride + c]) * scale;
    if (row_scale != nullptr) v *= row_scale[r];
    const __nv_bfloat16 h = __float2bfloat16_rn(v);
    hi[idx] = h;
    lo[idx] = __float2bfloat16_rn(v - __bfloat162float(h));
  }
}

__device__ __forceinline__ void round_to(float v, __nv_bfloat16* out) {
  *out = __float2bfloat16_rn(v);
}
__device__ __forceinline__ void round_to(float v, __half* out) { *out = __float2half_rn(v); }

// Per sequence s of `per_seq` fp32 elements: v = x * scale / factor[s] (factor may be
// null), written as out[s][0] = round(v) and, with parts == 2, out[s][1] = round(v -
// out[s][0]). One read and `parts` 16-bit writes per element.
template <typename Out>
__global__ void state_lowp_kernel(const float* __restrict__ x, int64_t per_seq, int64_t seqs,
                                  const float* __restrict__ factor, float scale, int parts,
                                  Out* __restrict__ out) {
  const int64_t n = per_seq * seqs;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t s = idx / per_seq, e = idx - s * per_seq;
    float v = x[idx] * scale;
    if (factor != nullptr) v /= factor[s];  // a power of two: exact
    Out* o = out + s * parts * per_seq + e;
    round_to(v, o);
    if (parts == 2) round_to(v - to_float(*o), o + per_seq);
  }
}

// One warp per row: a[r] . x[r] and a[r] . y[r / group].
template <typename T>
__global__ void row_dots_kernel(const T* __restrict__ a, int64_t a_row_stride,
                                const float* __restrict__ x, const float* __restrict__ y,
                                int64_t rows, int cols, int64_t group, float* __restrict__ dot_x,
                                float* __restrict__ dot_y) {
  const int lane = threadIdx.x % 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  if (r >= rows) return;
  const T* a_row = a + r * a_row_stride;
  const float* x_row = x != nullptr ? x + r * cols : nullptr;
  const float* y_row = y != nullptr ? y + (r / group) * cols : nullptr;
  float sx = 0.f, sy = 0.f;
  for (int c = lane; c < cols; c += 32) {
    const float av = to_float(a_row[c]);
    if (x_row != nullptr) sx = fmaf(av, x_row[c], sx);
    if (y_row != nullptr) sy = fmaf(av, y_row[c], sy);
  }
  for (int off = 16; off > 0; off /= 2) {
    sx += __shfl_xor_sync(0xffffffffu, sx, off);
    sy += __shfl_xor_sync(0xffffffffu, sy, off);
  }
  if (lane == 0) {
    dot_x[r] = sx;
    dot_y[r] = sy;
  }
}

// x (..., D) as rows with one row stride and a unit column stride (a copy only when the
// layout has no such form).
at::Tensor as_rows(const at::Tensor& x) {
  at::Tensor rows = x.reshape({-1, x.size(-1)});
  if (rows.stride(1) != 1 || (rows.size(0) > 1 && rows.stride(0) < rows.size(1))) {
    rows = rows.contiguous();
  }
  return rows;
}

#define XLSTM_DISPATCH_INPUT(dtype, ...)                                       \
  switch (dtype) {                                                             \
    case at::kFloat: { using scalar_t = float; __VA_ARGS__(); break; }         \
    case at::kBFloat16: { using scalar_t = __nv_bfloat16; __VA_ARGS__(); break; } \
    case at::kHalf: { using scalar_t = __half; __VA_ARGS__(); break; }         \
    default: TORCH_CHECK(false, "xlstm: internal error: unsupported dtype ", dtype); \
  }

}  // namespace

GemmOperand GemmOperand::t() const {
  GemmOperand o;
  if (value.defined()) o.value = value.transpose(-1, -2);
  if (hi.defined()) o.hi = hi.transpose(-1, -2);
  if (lo.defined()) o.lo = lo.transpose(-1, -2);
  return o;
}

std::pair<at::Tensor, at::Tensor> split_bf16(const at::Tensor& x, const at::Tensor& row_scale,
                                             double scale) {
  const at::Tensor rows = as_rows(x);
  const at::Tensor rs = row_scale.defined() ? row_scale.to(at::kFloat).contiguous() : at::Tensor();
  TORCH_CHECK(!rs.defined() || rs.numel() == rows.size(0),
              "xlstm: internal error: row_scale does not match the rows");
  at::Tensor hi = at::empty(x.sizes(), x.options().dtype(at::kBFloat16));
  at::Tensor lo = at::empty(x.sizes(), x.options().dtype(at::kBFloat16));
  const int64_t n = rows.numel();
  if (n == 0) return {hi, lo};
  c10::cuda::CUDAGuard guard(x.device());
  const int blocks = static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65536));
  XLSTM_DISPATCH_INPUT(rows.scalar_type(), [&] {
    split_bf16_kernel<scalar_t><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const scalar_t*>(rows.data_ptr()), rows.stride(0),
        rs.defined() ? rs.data_ptr<float>() : nullptr, static_cast<float>(scale), rows.size(0),
        rows.size(1), reinterpret_cast<__nv_bfloat16*>(hi.data_ptr()),
        reinterpret_cast<__nv_bfloat16*>(lo.data_ptr()));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {hi, lo};
}

GemmOperand GemmOperand::rounded_once() const {
  GemmOperand o = *this;
  o.lo = at::Tensor();
  return o;
}

GemmOperand gemm_operand(const at::Tensor& x, at::ScalarType input_dtype,
                         const at::Tensor& row_scale, double scale) {
  GemmOperand o;
  if (!(XLSTM_HAS_OUT_DTYPE_GEMM && input_dtype == at::kBFloat16 && x.is_cuda())) {
    o.value = x.to(at::kFloat) * scale;
    if (row_scale.defined()) o.value = o.value * row_scale.unsqueeze(-1);
    return o;
  }
  if (x.scalar_type() == at::kBFloat16 && !row_scale.defined() && scale == 1.0) {
    o.hi = x;
    return o;
  }
  std::tie(o.hi, o.lo) = split_bf16(x, row_scale, scale);
  return o;
}

at::Tensor gemm_f32(const GemmOperand& a, const GemmOperand& b) {
  if (a.value.defined()) return at::matmul(a.value, b.value);
  TORCH_CHECK(a.hi.defined() && b.hi.defined(), "xlstm: internal error: mixed GEMM routes");
#if XLSTM_HAS_OUT_DTYPE_GEMM
  const int64_t M = a.hi.size(-2), K = a.hi.size(-1), N = b.hi.size(-1);
  std::vector<int64_t> out_shape = a.hi.sizes().vec();
  out_shape.back() = N;
  auto as3 = [&](const at::Tensor& t, int64_t r, int64_t c) { return t.reshape({-1, r, c}); };
  at::Tensor out = at::bmm(as3(a.hi, M, K), as3(b.hi, K, N), at::kFloat);
  if (a.lo.defined()) at::baddbmm_out(out, out, as3(a.lo, M, K), as3(b.hi, K, N), at::kFloat);
  if (b.lo.defined()) at::baddbmm_out(out, out, as3(a.hi, M, K), as3(b.lo, K, N), at::kFloat);
  return out.view(out_shape);
#else
  TORCH_CHECK(false, "xlstm: internal error: bf16 GEMM route without out_dtype support");
#endif
}

std::pair<at::Tensor, at::Tensor> weighted_outer_sum(const at::Tensor& a, const at::Tensor& r,
                                                     const at::Tensor& b,
                                                     at::ScalarType input_dtype,
                                                     bool want_row_sum) {
  if (input_dtype == at::kBFloat16 && scaled_outer_sum_supported(a, b)) {
    return scaled_outer_sum(a, r, b, want_row_sum);
  }
  const at::Tensor outer =
      gemm_f32(gemm_operand(a, input_dtype, r).t(), gemm_operand(b, input_dtype));
  at::Tensor row_sum;
  if (want_row_sum) {
    row_sum = gemm_f32(gemm_operand(r.unsqueeze(-2), input_dtype), gemm_operand(a, input_dtype))
                  .squeeze(-2);
  }
  return {outer, row_sum};
}

StateRowProduct rows_times_state(const at::Tensor& a, const at::Tensor& state,
                                 bool transpose_state, double scale, bool split,
                                 at::ScalarType input_dtype, const at::Tensor& c,
                                 const at::Tensor& y) {
  const int64_t N = state.size(transpose_state ? -2 : -1);
  if (input_dtype == at::kBFloat16 && state_row_product_supported(a, N, c)) {
    return state_row_product(a, state, transpose_state, scale, split, c, y);
  }
  GemmOperand m = gemm_operand(state, input_dtype, at::Tensor(), scale);
  if (transpose_state) m = m.t();
  if (!split) m = m.rounded_once();
  StateRowProduct r;
  r.out = gemm_f32(gemm_operand(a, input_dtype), m);
  if (c.defined()) std::tie(r.dot_x, r.dot_y) = row_dots(c, r.out, y);
  return r;
}

std::pair<at::Tensor, at::Tensor> state_for_tensor_cores(const at::Tensor& state,
                                                         at::ScalarType input_dtype,
                                                         double scale, bool split) {
  TORCH_CHECK(input_dtype == at::kBFloat16 || input_dtype == at::kHalf,
              "xlstm: internal error: tensor-core states are fp16 or bf16");
  const at::Tensor s = state.to(at::kFloat).contiguous();
  const int64_t K = s.size(-2), N = s.size(-1), seqs = s.numel() / (K * N);
  at::Tensor factor;
  if (input_dtype == at::kHalf) {
    constexpr double kLimit = 16384.0;
    const at::Tensor amax = s.abs().amax({-2, -1}) * scale;
    factor = at::where(amax > kLimit, at::exp2(at::ceil(at::log2(amax / kLimit))),
                       at::ones_like(amax))
                 .contiguous();
  }
  const int parts = split ? 2 : 1;
  std::vector<int64_t> sizes = s.sizes().vec();
  sizes[sizes.size() - 2] = parts * K;
  at::Tensor out = at::empty(sizes, s.options().dtype(input_dtype));
  if (s.numel() == 0) return {out, factor};
  c10::cuda::CUDAGuard guard(s.device());
  const int blocks =
      static_cast<int>(std::min<int64_t>((s.numel() + kThreads - 1) / kThreads, 65536));
  const float* f = factor.defined() ? factor.data_ptr<float>() : nullptr;
  auto launch = [&](auto* o) {
    state_lowp_kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s.data_ptr<float>(), K * N, seqs, f, static_cast<float>(scale), parts, o);
  };
  if (input_dtype == at::kBFloat16) {
    launch(reinterpret_cast<__nv_bfloat16*>(out.data_ptr()));
  } else {
    launch(reinterpret_cast<__half*>(out.data_ptr()));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, factor};
}

std::pair<at::Tensor, at::Tensor> row_dots(const at::Tensor& a, const at::Tensor& x,
                                           const at::Tensor& y) {
  const at::Tensor rows = as_rows(a);
  const int64_t R = rows.size(0), D = rows.size(1), group = a.size(-2);
  std::vector<int64_t> out_shape = a.sizes().vec();
  out_shape.pop_back();
  at::Tensor dot_x = at::empty(out_shape, a.options().dtype(at::kFloat));
  at::Tensor dot_y = at::empty(out_shape, a.options().dtype(at::kFloat));
  const at::Tensor xc = x.defined() ? x.to(at::kFloat).contiguous() : at::Tensor();
  const at::Tensor yc = y.defined() ? y.to(at::kFloat).contiguous() : at::Tensor();
  TORCH_CHECK(!xc.defined() || xc.numel() == R * D, "xlstm: internal error: row_dots x shape");
  TORCH_CHECK(!yc.defined() || yc.numel() == (R / group) * D,
              "xlstm: internal error: row_dots y shape");
  if (R == 0) return {dot_x, dot_y};
  c10::cuda::CUDAGuard guard(a.device());
  const int64_t blocks = (R + kThreads / 32 - 1) / (kThreads / 32);
  XLSTM_DISPATCH_INPUT(rows.scalar_type(), [&] {
    row_dots_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0,
                                c10::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const scalar_t*>(rows.data_ptr()), rows.stride(0),
        xc.defined() ? xc.data_ptr<float>() : nullptr, yc.defined() ? yc.data_ptr<float>() : nullptr,
        R, static_cast<int>(D), group, dot_x.data_ptr<float>(), dot_y.data_ptr<float>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {dot_x, dot_y};
}

}  // namespace xlstm
