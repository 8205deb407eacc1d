#include "mlstm_dispatch.h"

#include "cuda_device_info.h"

#include <c10/util/Exception.h>

namespace xlstm {
namespace {

Family parse_backend(c10::string_view backend) {
  if (backend == "auto") return Family::None;
  if (backend == "sm90") return Family::Sm90;
  if (backend == "sm80") return Family::Sm80;
  if (backend == "sm75") return Family::Sm75;
  TORCH_CHECK_VALUE(false, "mlstm: `backend` must be one of 'auto', 'sm90', 'sm80', 'sm75', got '",
                    std::string(backend), "'");
}

// The family the GPU's compute capability selects (SPEC §6).
Family family_for_capability(int major, int minor) {
  if (major == 9 && minor == 0) return Family::Sm90;
  if (major >= 8) return Family::Sm80;
  if (major == 7 && minor >= 5) return Family::Sm75;
  return Family::None;
}

// Whether `family`'s machine code can run on a GPU of this capability. The sm90
// family is sm_90a code, which only 9.0 runs; sm75 and sm80 code is built for
// every later arch too (or carried as PTX).
bool family_runs_on(Family family, int major, int minor) {
  const int cc = major * 10 + minor;
  switch (family) {
    case Family::Sm90: return cc == 90;
    case Family::Sm80: return cc >= 80;
    case Family::Sm75: return cc >= 75;
    case Family::None: return true;
  }
  return false;
}

}  // namespace

const char* family_name(Family family) {
  switch (family) {
    case Family::Sm90: return "sm90";
    case Family::Sm80: return "sm80";
    case Family::Sm75: return "sm75";
    case Family::None: return "none";
  }
  return "none";
}

Algorithm parse_algorithm(c10::string_view algorithm) {
  if (algorithm == "auto" || algorithm == "chunkwise") return Algorithm::Chunkwise;
  TORCH_CHECK_VALUE(false, "mlstm: `algorithm` must be one of 'auto', 'chunkwise', got '",
                    std::string(algorithm), "'");
}

KernelChoice choose_kernel(const at::Tensor& q, c10::string_view algorithm,
                           c10::string_view backend) {
  KernelChoice choice{parse_algorithm(algorithm), parse_backend(backend), "aten_chunkwise"};
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
  TORCH_CHECK(major * 10 + minor >= 75, "mlstm: GPU ", q.device(), " has compute capability ",
              major, ".", minor, "; xlstm_cuda needs 7.5 or newer");
  if (choice.family == Family::None) {
    choice.family = family_for_capability(major, minor);
  } else {
    TORCH_CHECK_VALUE(family_runs_on(choice.family, major, minor), "mlstm: `backend`='",
                      std::string(backend), "' cannot run on ", q.device(),
                      " (compute capability ", major, ".", minor, "); ",
                      "sm90 needs 9.0, sm80 needs 8.0 or newer, sm75 needs 7.5 or newer");
  }
  // No per-architecture kernel exists yet for the chunkwise algorithm: every
  // family runs the ATen implementation on the GPU.
  return choice;
}

}  // namespace xlstm
