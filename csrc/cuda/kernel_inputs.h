// Tensor preparation shared by the kernel families' host code.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

namespace xlstm {

// The kernels move 16-byte vectors: the base pointer and every non-unit stride
// must be 16-byte aligned and the last dim contiguous; otherwise they work on a
// contiguous copy (strides are honoured, not copied, whenever they allow it).
inline bool is_vector_aligned(const at::Tensor& t) {
  const int64_t elems16 = 16 / t.element_size();
  bool ok = reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.stride(-1) == 1;
  for (int64_t d = 0; d < t.dim() - 1 && ok; ++d) {
    ok = t.stride(d) % elems16 == 0 || t.size(d) == 1;
  }
  return ok;
}
inline at::Tensor vector_aligned(const at::Tensor& t) {
  return is_vector_aligned(t) ? t : t.clone(at::MemoryFormat::Contiguous);
}

// A (B, H, L, D) bf16 CUDA view that the mma.sync state kernels (scaled_outer_sum.cu,
// state_row_product.cu) read in 16-byte chunks: D a multiple of 64, vector aligned.
inline bool is_bf16_row_operand(const at::Tensor& x) {
  return x.is_cuda() && x.scalar_type() == at::kBFloat16 && x.dim() == 4 &&
         x.size(3) % 64 == 0 && is_vector_aligned(x);
}

// An internal per-row (or per-sequence) operand: n contiguous fp32 values on the GPU.
inline bool is_rows_f32(const at::Tensor& t, int64_t n) {
  return t.defined() && t.is_cuda() && t.is_contiguous() && t.scalar_type() == at::kFloat &&
         t.numel() == n;
}

// An optional state tensor as contiguous fp32, or an undefined tensor.
inline at::Tensor state_fp32(const std::optional<at::Tensor>& s) {
  if (!s.has_value()) return at::Tensor();
  return s->to(at::kFloat).contiguous();
}

}  // namespace xlstm
