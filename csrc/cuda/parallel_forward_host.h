// Host side shared by every kernel family's parallel forward: turns validated
// tensors into MlstmForwardParams (gates prepared, state in fp32, alignment
// ensured), allocates the outputs and calls the family's launcher on the current
// stream of the inputs' device.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include <optional>
#include <tuple>

#include "mlstm_params.h"

namespace xlstm {

using ForwardLauncher = void (*)(const MlstmForwardParams&, cudaStream_t);

// Returns (h, m_rows, norm_rows). q, k, v: fp16/bf16 with last-dim stride 1.
// `sm90_kernel`: the launcher is the sm90 family's, whose kernel forms q̂_t C0 on
// tensor cores from a 16-bit copy of C0 (MlstmForwardParams::c0_lowp_ptr) and reads the
// stabilizer m_t (MlstmForwardParams::m_rows_ready); both are made here.
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_parallel_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& i,
    const at::Tensor& f, const std::optional<at::Tensor>& c0,
    const std::optional<at::Tensor>& n0, const std::optional<at::Tensor>& m0, double eps,
    ForwardLauncher launch, bool sm90_kernel);

}  // namespace xlstm
