#include "cuda_device_info.h"

#include <c10/util/Exception.h>

#ifdef XLSTM_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace xlstm {

bool built_with_cuda() {
#ifdef XLSTM_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::pair<int, int> cuda_compute_capability(int index) {
#ifdef XLSTM_WITH_CUDA
  int major = 0, minor = 0;
  auto err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index);
  }
  TORCH_CHECK(err == cudaSuccess, "xlstm_cuda: cannot read the compute capability of cuda:", index,
              ": ", cudaGetErrorString(err));
  return {major, minor};
#else
  (void)index;
  TORCH_CHECK(false, "xlstm_cuda was built without CUDA (no toolkit found at build time); "
              "reinstall with CUDA_HOME set to use CUDA kernel families");
#endif
}

int cuda_max_shared_memory_optin(int index) {
#ifdef XLSTM_WITH_CUDA
  int bytes = 0;
  const auto err = cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, index);
  TORCH_CHECK(err == cudaSuccess, "xlstm_cuda: cannot read the shared memory size of cuda:", index,
              ": ", cudaGetErrorString(err));
  return bytes;
#else
  (void)index;
  return 0;
#endif
}

int cuda_multiprocessor_count(int index) {
#ifdef XLSTM_WITH_CUDA
  int count = 0;
  const auto err = cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, index);
  TORCH_CHECK(err == cudaSuccess, "xlstm_cuda: cannot read the SM count of cuda:", index, ": ",
              cudaGetErrorString(err));
  return count;
#else
  (void)index;
  return 0;
#endif
}

}  // namespace xlstm
