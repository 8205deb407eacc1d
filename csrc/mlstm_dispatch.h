// Which implementation runs a call: algorithm and kernel family resolution.
//
// Families follow the GPU's compute capability (SPEC §6): 9.0 -> sm90,
// 8.x and >= 10 -> sm80, 7.5 -> sm75, below 7.5 -> error. `backend` (or the
// XLSTM_CUDA_BACKEND environment variable, read by the Python wrapper) forces a
// family; forcing one the GPU cannot run is an error.
//
// Algorithms, where this build has a kernel for the GPU, dtype and head dims:
// "parallel" runs the family's tiled (quadratic) kernel over the whole sequence;
// "chunkwise" runs the same kernel per chunk, with the state entering each chunk
// from a scan over chunks (csrc/cuda/chunkwise_host.h; O(S·L) work); "auto" picks
// chunkwise from kAutoChunkwiseMinLength steps on (the backward from
// kAutoChunkwiseBackwardMinLength), parallel below. Other cases
// (CPU, fp32/fp64, other head dims) and backend "aten" run the ATen chunkwise path,
// which computes the same function. A build without the sm90 family runs the sm80
// kernel on 9.0 GPUs. bf16 with the sm75 family and algorithm='parallel' is an error
// (Turing has no bf16 MMA).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <string>

namespace xlstm {

enum class Algorithm { Auto, Chunkwise, Parallel };
enum class Family { None, Sm75, Sm80, Sm90 };  // None: no CUDA family (CPU)

enum class Kernel {
  AtenChunkwise,  // csrc/aten, any device and dtype
  Sm75Parallel,   // csrc/sm75, hand-written mma.sync PTX tiled forward (fp16)
  Sm80Parallel,   // csrc/sm80, CuTe cp.async + mma.sync tiled forward (fp16, bf16)
  Sm90Parallel,   // csrc/sm90, CuTe WGMMA + TMA warp-specialized forward (fp16, bf16)
};

struct KernelChoice {
  Family family;
  Kernel kernel;
  bool chunked = false;  // the kernel runs per chunk (the chunkwise algorithm)
};

// "auto" runs the kernels chunkwise from these sequence lengths on: below them the
// quadratic form's one pass is faster than the scan plus the per-chunk state terms.
// Measured on an H100, bf16, B·S = 65,536, sm90 kernels, chunk 512
// (benchmarks/auto_threshold_sweep.py 2048 3072; benchmarks/NOTES.md, session 7), ms at
// S = 2048 / 3072: NH 32 D 128 forward parallel 2.58 / 3.59 vs chunkwise 3.61 / 3.17,
// backward (fwd+bwd minus fwd) parallel 12.7 / 17.6 vs chunkwise 12.6 / 13.4; NH 16
// 128/256 forward 2.34 / 2.91 vs 2.96 / 2.69, backward 9.0 / 13.1 vs 9.8 / 10.7. The
// parallel times grow linearly with S at fixed B·S, the chunkwise ones stay flat:
// forward crossovers near S = 2780 (both head shapes), backward near 2050 (NH 32) and
// 2340 (NH 16). The backward threshold sits between the two measured lengths.
// Either backward takes either forward's row statistics (the same function).
constexpr int64_t kAutoChunkwiseMinLength = 3072;
constexpr int64_t kAutoChunkwiseBackwardMinLength = 2560;

// Resolves the kernel for inputs like (q, v); throws on bad `algorithm`/`backend`
// values and on families the GPU cannot run or this build left out.
KernelChoice choose_kernel(const at::Tensor& q, const at::Tensor& v, c10::string_view algorithm,
                           c10::string_view backend);

// "sm80:sm80_parallel", "aten_chunkwise", ...: for logs, tests and the bench.
std::string describe(const KernelChoice& choice);

// The backward: the sm90 family's WGMMA kernels serve 9.0 GPUs for the head dims they
// take (csrc/sm90/mlstm_bwd_sm90_api.h), the sm80 family's kernels 8.x, newer GPUs and
// the other head dims on 9.0, their Turing build the sm75 family (fp16); everything
// else, and head dims whose tiles do not fit the GPU's shared memory, run the ATen
// chunkwise backward.
enum class BackwardKernel {
  AtenChunkwise,  // csrc/aten
  Sm75Parallel,   // csrc/sm75 mlstm_bwd_*: the sm80 kernels with mma.sync m16n8k8 (fp16)
  Sm80Parallel,   // csrc/sm80 mlstm_bwd_*: CuTe cp.async + mma.sync (fp16, bf16)
  Sm90Parallel,   // csrc/sm90 mlstm_bwd_*: CuTe WGMMA + TMA, warp-specialized (fp16, bf16)
};

struct BackwardChoice {
  Family family;
  BackwardKernel kernel;
  bool chunked = false;  // as KernelChoice::chunked
};

BackwardChoice choose_backward_kernel(const at::Tensor& q, const at::Tensor& v,
                                      c10::string_view algorithm, c10::string_view backend);

// "sm90:sm90_backward", "sm80:sm80_backward_chunkwise", "aten_chunkwise", ...
std::string describe(const BackwardChoice& choice);

// The default chunk length of the ATen chunkwise path.
constexpr int64_t kDefaultChunkSize = 64;

}  // namespace xlstm
