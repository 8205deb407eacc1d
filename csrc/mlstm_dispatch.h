// Which implementation runs a call: algorithm and kernel family resolution.
//
// Families follow the GPU's compute capability (SPEC §6): 9.0 -> sm90,
// 8.x and >= 10 -> sm80, 7.5 -> sm75, below 7.5 -> error. `backend` (or the
// XLSTM_CUDA_BACKEND environment variable, read by the Python wrapper) forces a
// family; forcing one the GPU cannot run is an error.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <string>

namespace xlstm {

enum class Algorithm { Chunkwise };
enum class Family { None, Sm75, Sm80, Sm90 };  // None: CPU (no CUDA family involved)

// The implementation a call resolves to, named for logs, tests and the bench.
struct KernelChoice {
  Algorithm algorithm;
  Family family;
  std::string kernel;  // e.g. "aten_chunkwise"
};

Algorithm parse_algorithm(c10::string_view algorithm);
KernelChoice choose_kernel(const at::Tensor& q, c10::string_view algorithm,
                           c10::string_view backend);
const char* family_name(Family family);

// The default chunk length of the ATen chunkwise path.
constexpr int64_t kDefaultChunkSize = 64;

}  // namespace xlstm
