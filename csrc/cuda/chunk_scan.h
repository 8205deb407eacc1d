// The inter-chunk recurrence of the chunkwise algorithm: one linear scan per head
// over the N chunks of a sequence.
#pragma once

#include <ATen/ATen.h>

namespace xlstm {

// For every row r of (R, N, E) and every element e:
//   acc = init[r, e] (0 when `init` is undefined)
//   for k in 0..N-1 (N-1..0 when `reverse`):  out[r, k, e] = acc;
//                                            acc = decay[r, k] * acc + x[r, k, e]
//   last[r, e] = acc
// x: (R, N, E) fp32 contiguous, E a multiple of 4; decay: (R, N) fp32 contiguous;
// init: (R, E) fp32 contiguous or undefined. Returns {out, last}.
std::pair<at::Tensor, at::Tensor> chunk_linear_scan(const at::Tensor& x, const at::Tensor& decay,
                                                    const at::Tensor& init, bool reverse);

}  // namespace xlstm
