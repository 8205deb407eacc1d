// The compute capability of a CUDA device, without ATen/cuda/CUDAContext.h
// (which drags in cuSPARSE headers some toolkits lack).
#pragma once

#include <utility>

namespace xlstm {

// Whether this build links the CUDA runtime (CUDA toolkit found at build time).
bool built_with_cuda();

// (major, minor) of device `index`. Throws if the build has no CUDA runtime.
std::pair<int, int> cuda_compute_capability(int index);

// Largest dynamic shared memory one block of a kernel may opt in to on device `index`.
int cuda_max_shared_memory_optin(int index);

// Number of streaming multiprocessors of device `index` (persistent kernels' grid size).
int cuda_multiprocessor_count(int index);

}  // namespace xlstm
