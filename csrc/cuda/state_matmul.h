// Products between kernel inputs (fp16/bf16) and fp32 quantities (states, weighted
// rows), for the state terms of the GPU forward and backward.
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

#include <utility>
#include <vector>

namespace xlstm {

// The bf16 parts of a bf16 tensor (itself) or of an fp32 one (hi + lo, equal to it to
// about 2^-17 relative: a bf16 GEMM of each part keeps fp32-class precision).
inline std::vector<at::Tensor> bf16_parts(const at::Tensor& x) {
  if (x.scalar_type() == at::kBFloat16) return {x};
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor hi = xf.to(at::kBFloat16);
  return {hi, (xf - hi).to(at::kBFloat16)};
}

// a @ b with an fp32 result; a (..., M, K), b (..., K, N) with equal leading dims, any
// strides. Where the kernel inputs are bf16 the product runs on tensor cores with
// fp32 accumulation: bf16 operands as they are, fp32 ones split into bf16 hi + lo
// parts (the lo x lo product, ~2^-18 relative, is left out). Otherwise it runs in
// fp32 (an fp32 state can exceed fp16's range, so fp16 operands are no option).
inline at::Tensor matmul_f32(const at::Tensor& a, const at::Tensor& b,
                             at::ScalarType input_dtype) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 8)
  if (input_dtype == at::kBFloat16 && a.is_cuda()) {
    const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
    std::vector<int64_t> out_shape = a.sizes().vec();
    out_shape.back() = N;
    const auto as = bf16_parts(a), bs = bf16_parts(b);
    at::Tensor out;
    for (size_t x = 0; x < as.size(); ++x) {
      for (size_t y = 0; y < bs.size(); ++y) {
        if (x == 1 && y == 1) continue;
        const at::Tensor prod =
            at::bmm(as[x].reshape({-1, M, K}), bs[y].reshape({-1, K, N}), at::kFloat);
        out = out.defined() ? out.add_(prod) : prod;
      }
    }
    return out.view(out_shape);
  }
#endif
  (void)input_dtype;
  return at::matmul(a.to(at::kFloat), b.to(at::kFloat));
}

}  // namespace xlstm
