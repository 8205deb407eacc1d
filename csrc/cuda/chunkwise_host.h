// The chunkwise algorithm on the GPU, built from the parallel kernels.
//
// The sequence is cut into N chunks of L steps. A scan over the chunks gives the
// (C, n, m) state entering each chunk (csrc/cuda/chunk_scan.cu, with the per-chunk
// weighted k v^T sums from csrc/cuda/scaled_outer_sum.cu); every chunk then runs as an
// independent sequence of L steps through the family's parallel kernels, with that
// state as its initial state. The backward does the same with the gradient of each
// chunk's end state, found by a reverse scan, as the chunk's final-state gradient. It is the same
// function (SPEC §1) and the same gradient (§2), with O(S·L) work instead of O(S²):
// the form for long sequences.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "cuda/parallel_backward_host.h"  // BackwardLauncher
#include "cuda/parallel_forward_host.h"   // ForwardLauncher

namespace xlstm {

// The chunk length the kernels run when the caller gives none. H100, bf16, B·S =
// 65,536, sm90 forward + backward kernels (benchmarks/NOTES.md, session 4): 512 beat
// 256 and 1024 at every S measured (NH 32, D 128, fwd+bwd at S = 4096 / 6144 / 8192:
// L 256 31.5 / 29.4 / 32.1 ms, L 512 29.5 / 27.9 / 29.9, L 1024 31.2 / 29.3 / 31.3), and
// again with the fused state kernels (session 6, S = 2048 / 4096: L 256 21.5 / 21.4,
// L 512 20.9 / 20.8, L 1024 23.0 / 23.0).
constexpr int64_t kDefaultKernelChunkSize = 512;

// Returns (h, m_rows, norm_rows, c_last, n_last, m_last); the last three are 0-element
// tensors unless return_last_states. `sm90_kernel`: as for run_parallel_forward
// (every chunk's state is the initial state of its rows).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
run_chunkwise_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& i, const at::Tensor& f,
                      const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& n0,
                      const std::optional<at::Tensor>& m0, double eps, bool return_last_states,
                      int64_t chunk_size, ForwardLauncher launch, bool sm90_kernel);

// The state after the last step, (C_S, n_S, m_S): the forward's state scan alone.
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_chunkwise_final_state(
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& i, const at::Tensor& f,
    const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& n0,
    const std::optional<at::Tensor>& m0, int64_t chunk_size);

// Returns (dq, dk, dv, di, df, dc_initial, dn_initial). `state_on_tensor_cores`: as for
// run_parallel_backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
run_chunkwise_backward(const at::Tensor& dh, const std::optional<at::Tensor>& dc_last,
                       const std::optional<at::Tensor>& dn_last, const at::Tensor& q,
                       const at::Tensor& k, const at::Tensor& v, const at::Tensor& i,
                       const at::Tensor& f, const std::optional<at::Tensor>& c0,
                       const std::optional<at::Tensor>& n0, const std::optional<at::Tensor>& m0,
                       const at::Tensor& m_rows, double eps, int64_t chunk_size,
                       BackwardLauncher launch, bool state_on_tensor_cores);

}  // namespace xlstm
