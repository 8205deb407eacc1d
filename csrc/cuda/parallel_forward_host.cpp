#include "cuda/parallel_forward_host.h"

#include "cuda/gate_prefix.h"
#include "cuda/kernel_inputs.h"
#include "cuda/state_gemm.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <utility>

namespace xlstm {

std::tuple<at::Tensor, at::Tensor, at::Tensor> run_parallel_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& i,
    const at::Tensor& f, const std::optional<at::Tensor>& c0,
    const std::optional<at::Tensor>& n0, const std::optional<at::Tensor>& m0, double eps,
    ForwardLauncher launch, bool sm90_kernel) {
  const int64_t B = q.size(0), NH = q.size(1), S = q.size(2), DQK = q.size(3), DV = v.size(3);
  c10::cuda::CUDAGuard device_guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();

  at::Tensor h = at::empty({B, NH, S, DV}, q.options());
  at::Tensor m_rows = at::empty({B, NH, S}, q.options().dtype(at::kFloat));
  at::Tensor norm_rows = at::empty({B, NH, S}, q.options().dtype(at::kFloat));
  if (B * NH == 0) return {h, m_rows, norm_rows};

  const at::Tensor qa = vector_aligned(q), ka = vector_aligned(k), va = vector_aligned(v);
  const at::Tensor ig = i.to(at::kFloat).contiguous();
  const at::Tensor c0f = state_fp32(c0), n0f = state_fp32(n0), m0f = state_fp32(m0);
  // F_t = cumsum(logsigmoid(f)) in fp64: |F| grows linearly with S, and the kernels
  // need F_t - F_j to fp32 precision. The sm90 kernel also reads the stabilizer m_t
  // (no running max inside: no rescaling of O and b per key tile).
  const GatePrefix gates = gate_prefix(f, ig, m0f, /*want_m=*/sm90_kernel);
  const at::Tensor& fcum = gates.fcum;
  if (sm90_kernel) m_rows = gates.m;  // else the kernel writes it

  MlstmForwardParams p;
  p.q_ptr = qa.data_ptr();
  p.k_ptr = ka.data_ptr();
  p.v_ptr = va.data_ptr();
  p.h_ptr = h.data_ptr();
  p.q_batch_stride = qa.stride(0); p.q_head_stride = qa.stride(1); p.q_row_stride = qa.stride(2);
  p.k_batch_stride = ka.stride(0); p.k_head_stride = ka.stride(1); p.k_row_stride = ka.stride(2);
  p.v_batch_stride = va.stride(0); p.v_head_stride = va.stride(1); p.v_row_stride = va.stride(2);
  p.h_batch_stride = h.stride(0); p.h_head_stride = h.stride(1); p.h_row_stride = h.stride(2);
  p.igate_ptr = ig.data_ptr<float>();
  p.fcum_ptr = fcum.data_ptr<double>();
  p.c0_ptr = c0f.defined() ? c0f.data_ptr<float>() : nullptr;
  p.n0_ptr = n0f.defined() ? n0f.data_ptr<float>() : nullptr;
  p.m0_ptr = m0f.defined() ? m0f.data_ptr<float>() : nullptr;
  at::Tensor c0_lowp, c0_factor;
  if (sm90_kernel && c0f.defined()) {
    std::tie(c0_lowp, c0_factor) =
        state_for_tensor_cores(c0f, q.scalar_type(), 1.0 / std::sqrt(static_cast<double>(DQK)),
                               /*split=*/true);
    p.c0_lowp_ptr = c0_lowp.data_ptr();
    p.c0_factor_ptr = c0_factor.defined() ? c0_factor.data_ptr<float>() : nullptr;
  }
  p.m_rows_ready = sm90_kernel;
  p.m_rows_ptr = m_rows.data_ptr<float>();
  p.norm_rows_ptr = norm_rows.data_ptr<float>();
  const at::Tensor work_counter = at::zeros({1}, q.options().dtype(at::kInt));
  p.work_counter = work_counter.data_ptr<int>();
  p.B = B; p.NH = NH; p.S = S;
  p.DQK = static_cast<int>(DQK); p.DV = static_cast<int>(DV);
  p.eps = static_cast<float>(eps);
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(DQK)));
  p.is_bf16 = q.scalar_type() == at::kBFloat16;
  p.has_c0 = p.c0_ptr != nullptr;
  p.has_n0 = p.n0_ptr != nullptr;
  p.has_m0 = p.m0_ptr != nullptr;
  launch(p, stream);
  return {h, m_rows, norm_rows};
}

}  // namespace xlstm
