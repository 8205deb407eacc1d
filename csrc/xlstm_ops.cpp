// The op family torch.ops.xlstm.*: schemas, validation, and per-device kernels.
//
// mlstm_forward returns h plus the per-row statistics the backward needs (the
// stabilizer m_t and the signed normalizer b_t), and the final state (C, n, m)
// when return_last_states is set (empty tensors otherwise). mlstm_backward
// returns the gradients of q, k, v, i, f and of the initial C and n (empty when
// those were not given). `chunk_size` 0 means "the implementation's default".
#include <torch/library.h>

#include <Python.h>

#include "aten/mlstm_chunkwise_aten.h"
#include "family_kernels.h"
#include "mlstm_checks.h"
#include "mlstm_dispatch.h"

namespace xlstm {
namespace {

using Tensor = at::Tensor;
using OptTensor = std::optional<at::Tensor>;

int64_t resolve_chunk_size(int64_t chunk_size) {
  return chunk_size > 0 ? chunk_size : kDefaultChunkSize;
}

#ifdef XLSTM_WITH_CUDA
// The chunk length of the kernels' chunkwise path (their default differs from ATen's).
int64_t resolve_kernel_chunk_size(int64_t chunk_size) {
  return chunk_size > 0 ? chunk_size : kDefaultKernelChunkSize;
}
#endif

#ifdef XLSTM_WITH_CUDA
// The launcher of a kernel that choose_kernel picked (it only picks compiled ones).
ForwardLauncher launcher(Kernel kernel) {
  switch (kernel) {
#ifdef XLSTM_FAMILY_SM75
    case Kernel::Sm75Parallel: return &run_mlstm_fwd_sm75;
#endif
#ifdef XLSTM_FAMILY_SM80
    case Kernel::Sm80Parallel: return &run_mlstm_fwd_sm80;
#endif
#ifdef XLSTM_FAMILY_SM90
    case Kernel::Sm90Parallel: return &run_mlstm_fwd_sm90;
#endif
    default: TORCH_CHECK(false, "xlstm: internal error: no launcher for the chosen kernel");
  }
}

BackwardLauncher backward_launcher(BackwardKernel kernel) {
  switch (kernel) {
#ifdef XLSTM_FAMILY_SM75
    case BackwardKernel::Sm75Parallel: return &run_mlstm_bwd_sm75;
#endif
#ifdef XLSTM_FAMILY_SM80
    case BackwardKernel::Sm80Parallel: return &run_mlstm_bwd_sm80;
#endif
#ifdef XLSTM_FAMILY_SM90
    case BackwardKernel::Sm90Parallel: return &run_mlstm_bwd_sm90;
#endif
    default: TORCH_CHECK(false, "xlstm: internal error: no launcher for the chosen backward kernel");
  }
}
#endif

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> mlstm_forward(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& i, const Tensor& f,
    const OptTensor& c_initial, const OptTensor& n_initial, const OptTensor& m_initial,
    double eps, bool return_last_states, c10::string_view algorithm, int64_t chunk_size,
    c10::string_view backend) {
  check_forward_inputs(q, k, v, i, f, c_initial, n_initial, m_initial, eps, chunk_size);
  const KernelChoice choice = choose_kernel(q, v, algorithm, backend);
#ifdef XLSTM_WITH_CUDA
  if (choice.kernel != Kernel::AtenChunkwise) {
    const int64_t kernel_chunk = resolve_kernel_chunk_size(chunk_size);
    if (choice.chunked) {
      return run_chunkwise_forward(q, k, v, i, f, c_initial, n_initial, m_initial, eps,
                                   return_last_states, kernel_chunk, launcher(choice.kernel),
                                   choice.kernel == Kernel::Sm90Parallel);
    }
    auto [h, m_rows, norm_rows] =
        run_parallel_forward(q, k, v, i, f, c_initial, n_initial, m_initial, eps,
                             launcher(choice.kernel), choice.kernel == Kernel::Sm90Parallel);
    at::Tensor c_last, n_last, m_last;
    if (return_last_states) {  // the quadratic kernels compute h; the state comes from the scan
      std::tie(c_last, n_last, m_last) =
          run_chunkwise_final_state(k, v, i, f, c_initial, n_initial, m_initial, kernel_chunk);
    } else {
      c_last = not_requested_output(m_rows.options());
      n_last = not_requested_output(m_rows.options());
      m_last = not_requested_output(m_rows.options());
    }
    return {h, m_rows, norm_rows, c_last, n_last, m_last};
  }
#endif
  auto out = mlstm_chunkwise_forward_aten(q, k, v, i, f, c_initial, n_initial, m_initial, eps,
                                          return_last_states, resolve_chunk_size(chunk_size));
  return {out.h, out.m_rows, out.norm_rows, out.c_last, out.n_last, out.m_last};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> mlstm_backward(
    const Tensor& dh, const OptTensor& dc_last, const OptTensor& dn_last,
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& i, const Tensor& f,
    const OptTensor& c_initial, const OptTensor& n_initial, const OptTensor& m_initial,
    const Tensor& h, const Tensor& m_rows, const Tensor& norm_rows,
    double eps, c10::string_view algorithm, int64_t chunk_size, c10::string_view backend) {
  check_forward_inputs(q, k, v, i, f, c_initial, n_initial, m_initial, eps, chunk_size);
  check_backward_inputs(dh, dc_last, dn_last, q, v, h, m_rows, norm_rows);
  // Every choice computes the same gradient from the forward's per-row statistics:
  // the family's tiled kernels where there are some, else the ATen chunkwise backward.
  const BackwardChoice choice = choose_backward_kernel(q, v, algorithm, backend);
#ifdef XLSTM_WITH_CUDA
  if (choice.kernel != BackwardKernel::AtenChunkwise) {
    const bool state_on_tensor_cores = choice.kernel == BackwardKernel::Sm90Parallel;
    if (choice.chunked) {
      return run_chunkwise_backward(dh, dc_last, dn_last, q, k, v, i, f, c_initial, n_initial,
                                    m_initial, m_rows, eps, resolve_kernel_chunk_size(chunk_size),
                                    backward_launcher(choice.kernel), state_on_tensor_cores);
    }
    return run_parallel_backward(dh, dc_last, dn_last, q, k, v, i, f, c_initial, n_initial,
                                 m_initial, m_rows, h, norm_rows, eps,
                                 backward_launcher(choice.kernel),
                                 state_on_tensor_cores);
  }
#endif
  auto g = mlstm_chunkwise_backward_aten(dh, dc_last, dn_last, q, k, v, i, f, c_initial,
                                         n_initial, m_initial, h, m_rows, norm_rows, eps,
                                         resolve_chunk_size(chunk_size));
  return {g.dq, g.dk, g.dv, g.di, g.df, g.dc_initial, g.dn_initial};
}

// Which kernel a forward call with these arguments runs, e.g. "sm90:sm80_parallel".
std::string selected_kernel(const Tensor& q, const Tensor& v, c10::string_view algorithm,
                            c10::string_view backend) {
  return describe(choose_kernel(q, v, algorithm, backend));
}

// Which kernel the backward of such a call runs, e.g. "sm90:sm80_backward".
std::string selected_backward_kernel(const Tensor& q, const Tensor& v, c10::string_view algorithm,
                                     c10::string_view backend) {
  return describe(choose_backward_kernel(q, v, algorithm, backend));
}

}  // namespace

TORCH_LIBRARY(xlstm, m) {
  m.def(
      "mlstm_forward(Tensor q, Tensor k, Tensor v, Tensor i, Tensor f, Tensor? c_initial, "
      "Tensor? n_initial, Tensor? m_initial, float eps, bool return_last_states, "
      "str algorithm, int chunk_size, str backend) -> "
      "(Tensor h, Tensor m_rows, Tensor norm_rows, Tensor c_last, Tensor n_last, Tensor m_last)");
  m.def(
      "mlstm_backward(Tensor dh, Tensor? dc_last, Tensor? dn_last, Tensor q, Tensor k, "
      "Tensor v, Tensor i, Tensor f, Tensor? c_initial, Tensor? n_initial, Tensor? m_initial, "
      "Tensor h, Tensor m_rows, Tensor norm_rows, float eps, str algorithm, int chunk_size, "
      "str backend) -> (Tensor dq, Tensor dk, Tensor dv, Tensor di, Tensor df, "
      "Tensor dc_initial, Tensor dn_initial)");
  // Not a tensor op: a query for tests, logs and the bench. Registered as a
  // CompositeImplicitAutograd kernel so it works for any device.
  m.def("selected_kernel(Tensor q, Tensor v, str algorithm, str backend) -> str",
        &selected_kernel);
  m.def("selected_backward_kernel(Tensor q, Tensor v, str algorithm, str backend) -> str",
        &selected_backward_kernel);
}

TORCH_LIBRARY_IMPL(xlstm, CPU, m) {
  m.impl("mlstm_forward", &mlstm_forward);
  m.impl("mlstm_backward", &mlstm_backward);
}

// The ATen path is device-generic, so CUDA tensors are served even before a
// per-architecture kernel takes over (and in builds without a CUDA toolkit).
TORCH_LIBRARY_IMPL(xlstm, CUDA, m) {
  m.impl("mlstm_forward", &mlstm_forward);
  m.impl("mlstm_backward", &mlstm_backward);
}

}  // namespace xlstm

// The .so is imported as the Python module xlstm_cuda._C so that loading it runs
// the registrations above; it defines no Python functions of its own.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
