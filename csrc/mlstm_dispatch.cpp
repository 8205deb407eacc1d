#include "mlstm_dispatch.h"

#include "cuda_device_info.h"

#ifdef XLSTM_FAMILY_SM75
#include "sm75/mlstm_bwd_sm75_api.h"  // mlstm_bwd_sm75_smem_bytes
#endif
#ifdef XLSTM_FAMILY_SM80
#include "sm80/mlstm_bwd_sm80_api.h"  // mlstm_bwd_sm80_smem_bytes
#endif
#ifdef XLSTM_FAMILY_SM90
#include "sm90/mlstm_bwd_sm90_api.h"  // mlstm_bwd_sm90_supports
#endif

#include <c10/util/Exception.h>

namespace xlstm {
namespace {

Algorithm parse_algorithm(c10::string_view algorithm) {
  if (algorithm == "auto") return Algorithm::Auto;
  if (algorithm == "chunkwise") return Algorithm::Chunkwise;
  if (algorithm == "parallel") return Algorithm::Parallel;
  TORCH_CHECK_VALUE(false, "mlstm: `algorithm` must be one of 'auto', 'chunkwise', 'parallel', "
                    "got '", std::string(algorithm), "'");
}

Family parse_backend(c10::string_view backend) {
  if (backend == "auto" || backend == "aten") return Family::None;
  if (backend == "sm90") return Family::Sm90;
  if (backend == "sm80") return Family::Sm80;
  if (backend == "sm75") return Family::Sm75;
  TORCH_CHECK_VALUE(false, "mlstm: `backend` must be one of 'auto', 'sm90', 'sm80', 'sm75', "
                    "'aten', got '",
                    std::string(backend), "'");
}

const char* family_name(Family family) {
  switch (family) {
    case Family::Sm90: return "sm90";
    case Family::Sm80: return "sm80";
    case Family::Sm75: return "sm75";
    case Family::None: return "none";
  }
  return "none";
}

// The family the GPU's compute capability selects (SPEC §6).
Family family_for_capability(int cc) {
  if (cc == 90) return Family::Sm90;
  if (cc >= 80) return Family::Sm80;
  return Family::Sm75;
}

// Whether `family`'s machine code can run on a GPU of this capability. The sm90
// family is sm_90a code, which only 9.0 runs; sm75 and sm80 code is built for
// every later arch too (or carried as PTX).
bool family_runs_on(Family family, int cc) {
  switch (family) {
    case Family::Sm90: return cc == 90;
    case Family::Sm80: return cc >= 80;
    case Family::Sm75: return cc >= 75;
    case Family::None: return true;
  }
  return false;
}

bool family_compiled(Family family) {
  switch (family) {
#ifdef XLSTM_FAMILY_SM75
    case Family::Sm75: return true;
#endif
#ifdef XLSTM_FAMILY_SM80
    case Family::Sm80: return true;
#endif
#ifdef XLSTM_FAMILY_SM90
    case Family::Sm90: return true;
#endif
    default: return false;
  }
}

bool parallel_head_dims(const at::Tensor& q, const at::Tensor& v) {
  const int64_t dqk = q.size(3), dv = v.size(3);
  return (dqk == 64 || dqk == 128 || dqk == 256) &&
         (dv == 64 || dv == 128 || dv == 256 || dv == 512);
}

// The tiled parallel kernel `family` runs for these inputs, or AtenChunkwise.
Kernel parallel_kernel(Family family, const at::Tensor& q, const at::Tensor& v) {
  const auto dt = q.scalar_type();
  if (!parallel_head_dims(q, v)) return Kernel::AtenChunkwise;
  const bool half = dt == at::kHalf || dt == at::kBFloat16;
  switch (family) {
    case Family::Sm90:
      if (family_compiled(Family::Sm90) && half) return Kernel::Sm90Parallel;
      [[fallthrough]];  // the sm80 kernel is built for 9.0 as well
    case Family::Sm80:
      if (family_compiled(Family::Sm80) && half) return Kernel::Sm80Parallel;
      return Kernel::AtenChunkwise;
    case Family::Sm75:
      if (family_compiled(Family::Sm75) && dt == at::kHalf) return Kernel::Sm75Parallel;
      return Kernel::AtenChunkwise;
    case Family::None: return Kernel::AtenChunkwise;
  }
  return Kernel::AtenChunkwise;
}

}  // namespace

std::string describe(const KernelChoice& choice) {
  const char* kernel = "aten_chunkwise";
  switch (choice.kernel) {
    case Kernel::Sm75Parallel: kernel = "sm75_parallel"; break;
    case Kernel::Sm80Parallel: kernel = "sm80_parallel"; break;
    case Kernel::Sm90Parallel: kernel = "sm90_parallel"; break;
    case Kernel::AtenChunkwise: break;
  }
  const std::string name = std::string(kernel) + (choice.chunked ? "_chunkwise" : "");
  if (choice.family == Family::None) return name;
  return std::string(family_name(choice.family)) + ":" + name;
}

KernelChoice choose_kernel(const at::Tensor& q, const at::Tensor& v, c10::string_view algorithm,
                           c10::string_view backend) {
  const Algorithm algo = parse_algorithm(algorithm);
  KernelChoice choice{parse_backend(backend), Kernel::AtenChunkwise};
  if (backend == "aten") return choice;
  if (!q.is_cuda()) {
    TORCH_CHECK_VALUE(choice.family == Family::None, "mlstm: `backend`='", std::string(backend),
                      "' selects a CUDA kernel family, but the inputs are on ", q.device(),
                      "; use backend='auto' for CPU tensors");
    return choice;
  }
  if (!built_with_cuda()) {
    // The ATen path still runs on the GPU; only forcing a family needs kernels.
    TORCH_CHECK_VALUE(choice.family == Family::None, "mlstm: `backend`='", std::string(backend),
                      "' needs CUDA kernels, but this build of xlstm_cuda has none "
                      "(no CUDA toolkit at build time); use backend='auto'");
    return choice;
  }
  const auto [major, minor] = cuda_compute_capability(q.get_device());
  const int cc = major * 10 + minor;
  TORCH_CHECK(cc >= 75, "mlstm: GPU ", q.device(), " has compute capability ", major, ".", minor,
              "; xlstm_cuda needs 7.5 or newer");
  if (choice.family == Family::None) {
    choice.family = family_for_capability(cc);
  } else {
    TORCH_CHECK_VALUE(family_runs_on(choice.family, cc), "mlstm: `backend`='",
                      std::string(backend), "' cannot run on ", q.device(),
                      " (compute capability ", major, ".", minor, "); ",
                      "sm90 needs 9.0, sm80 needs 8.0 or newer, sm75 needs 7.5 or newer");
  }
  TORCH_CHECK_TYPE(!(algo == Algorithm::Parallel && choice.family == Family::Sm75 &&
                     q.scalar_type() == at::kBFloat16),
                   "mlstm: the sm75 kernel family has no bfloat16 kernel (Turing GPUs have no "
                   "bfloat16 tensor cores): use float16 inputs, algorithm='chunkwise', or "
                   "backend='sm80' on an Ampere or newer GPU");
  choice.kernel = parallel_kernel(choice.family, q, v);
  choice.chunked = choice.kernel != Kernel::AtenChunkwise &&
                   (algo == Algorithm::Chunkwise ||
                    (algo == Algorithm::Auto && q.size(2) >= kAutoChunkwiseMinLength));
  return choice;
}

BackwardChoice choose_backward_kernel(const at::Tensor& q, const at::Tensor& v,
                                      c10::string_view algorithm, c10::string_view backend) {
  const KernelChoice fwd = choose_kernel(q, v, algorithm, backend);
  const Algorithm algo = parse_algorithm(algorithm);
  const bool chunked = algo == Algorithm::Chunkwise ||
                       (algo == Algorithm::Auto && q.size(2) >= kAutoChunkwiseBackwardMinLength);
  BackwardChoice choice{fwd.family, BackwardKernel::AtenChunkwise, chunked};
  if (q.size(0) * q.size(1) * q.size(2) == 0) return choice;
  const int dqk = int(q.size(3)), dv = int(v.size(3));
  auto fits = [&](int64_t smem) {
    return smem > 0 && smem <= cuda_max_shared_memory_optin(q.get_device());
  };
  (void)dqk; (void)dv; (void)fits;  // unused when neither family is built
#ifdef XLSTM_FAMILY_SM80
  if ((fwd.kernel == Kernel::Sm80Parallel || fwd.kernel == Kernel::Sm90Parallel) &&
      fits(mlstm_bwd_sm80_smem_bytes(dqk, dv))) {
    choice.kernel = BackwardKernel::Sm80Parallel;
  }
#endif
#ifdef XLSTM_FAMILY_SM90
  if (fwd.kernel == Kernel::Sm90Parallel && mlstm_bwd_sm90_supports(dqk, dv)) {
    choice.kernel = BackwardKernel::Sm90Parallel;
  }
#endif
#ifdef XLSTM_FAMILY_SM75
  if (fwd.kernel == Kernel::Sm75Parallel && fits(mlstm_bwd_sm75_smem_bytes(dqk, dv))) {
    choice.kernel = BackwardKernel::Sm75Parallel;
  }
#endif
  if (choice.kernel == BackwardKernel::AtenChunkwise) choice.chunked = false;
  return choice;
}

std::string describe(const BackwardChoice& choice) {
  const char* kernel = choice.kernel == BackwardKernel::Sm90Parallel   ? "sm90_backward"
                       : choice.kernel == BackwardKernel::Sm80Parallel ? "sm80_backward"
                       : choice.kernel == BackwardKernel::Sm75Parallel ? "sm75_backward"
                                                                       : "aten_chunkwise";
  const std::string name = std::string(kernel) + (choice.chunked ? "_chunkwise" : "");
  if (choice.family == Family::None) return name;
  return std::string(family_name(choice.family)) + ":" + name;
}

}  // namespace xlstm
