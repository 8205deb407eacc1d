// Input validation for the mLSTM ops: every check of SPEC §4 in one place, run
// before any work. Failures throw c10 errors that surface in Python as
// ValueError (bad values/shapes), TypeError (bad dtypes) or RuntimeError (devices),
// each naming the argument, what was expected and what was given.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace xlstm {

void check_forward_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& i, const at::Tensor& f,
                          const std::optional<at::Tensor>& c_initial,
                          const std::optional<at::Tensor>& n_initial,
                          const std::optional<at::Tensor>& m_initial,
                          double eps, int64_t chunk_size);

// Checks the backward-only tensors (gradients and saved forward outputs); the
// forward inputs are re-checked with check_forward_inputs.
void check_backward_inputs(const at::Tensor& dh,
                           const std::optional<at::Tensor>& dc_last,
                           const std::optional<at::Tensor>& dn_last,
                           const at::Tensor& q, const at::Tensor& v,
                           const at::Tensor& h, const at::Tensor& m_rows,
                           const at::Tensor& norm_rows);

}  // namespace xlstm
