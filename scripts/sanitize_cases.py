"""Small ragged-shape runs of every CUDA kernel family, forward and backward, for
compute-sanitizer (memcheck, racecheck) in scripts/gpu_check.sh. B=1, NH=2, S=100 (not
a multiple of any tile), with and without initial state (and final-state gradients),
with the parallel algorithm and the chunkwise one (chunks of 32: a padded last chunk).
Then one run with NH=300 heads (S=80) per family: more work items than SMs, so each
persistent sm90 CTA takes several; every other head has input gates ~1e4, so that the
backward's row pass runs over a subset of the sequences (the others' blocks return at
once in the sm80 / sm75 families).
    python scripts/sanitize_cases.py [parallel|chunkwise ...] [sm90|sm80|sm75 ...]
(default: both algorithms, every family the GPU runs)"""
import sys

import torch

import xlstm_cuda
from xlstm_cuda.families import FAMILY_DTYPES, runnable_families

ALGORITHMS = [a for a in sys.argv[1:] if a in ("parallel", "chunkwise")]
FAMILIES = [f for f in sys.argv[1:] if f not in ALGORITHMS]

for family in runnable_families():
    if FAMILIES and family not in FAMILIES:
        continue
    for dtype in FAMILY_DTYPES[family]:
        for dqk, dv in [(64, 128), (256, 64), (64, 256)]:
            q, k = (torch.randn(1, 2, 100, dqk, device="cuda", dtype=dtype) for _ in range(2))
            v = torch.randn(1, 2, 100, dv, device="cuda", dtype=dtype)
            i, f = torch.randn(1, 2, 100, device="cuda"), torch.randn(1, 2, 100, device="cuda") + 3
            c0 = torch.randn(1, 2, dqk, dv, device="cuda")
            n0, m0 = torch.randn(1, 2, dqk, device="cuda"), torch.randn(1, 2, 1, device="cuda")
            backward = "_backward" in xlstm_cuda.selected_backward_kernel(q, v, "parallel", family)
            for state, algorithm in [((None, None, None), "parallel"), ((c0, n0, m0), "parallel"),
                                     ((c0, n0, m0), "chunkwise")]:
                if ALGORITHMS and algorithm not in ALGORITHMS:
                    continue
                leaves = [t.clone().requires_grad_(backward) for t in (q, k, v, i, f)]
                h, (c, n, _m) = xlstm_cuda.mlstm(*leaves, *state, algorithm=algorithm,
                                                 chunk_size=32, backend=family,
                                                 return_last_states=True)
                if backward:
                    loss = (h.float() ** 2).sum() + c.sum() + n.sum()
                    torch.autograd.grad(loss, leaves)
                torch.cuda.synchronize()
            print(family, dtype, dqk, dv, xlstm_cuda.selected_kernel(q, v, "parallel", family),
                  xlstm_cuda.selected_backward_kernel(q, v, "parallel", family))

for family in runnable_families():
    if FAMILIES and family not in FAMILIES or ALGORITHMS and "parallel" not in ALGORITHMS:
        continue
    dtype = FAMILY_DTYPES[family][0]
    q, k = (torch.randn(1, 300, 80, 64, device="cuda", dtype=dtype) for _ in range(2))
    v = torch.randn(1, 300, 80, 128, device="cuda", dtype=dtype)
    i, f = torch.randn(1, 300, 80, device="cuda"), torch.randn(1, 300, 80, device="cuda") + 3
    i[:, ::2] *= 1e4
    backward = "_backward" in xlstm_cuda.selected_backward_kernel(q, v, "parallel", family)
    leaves = [t.clone().requires_grad_(backward) for t in (q, k, v, i, f)]
    h = xlstm_cuda.mlstm(*leaves, algorithm="parallel", backend=family)
    if backward:
        torch.autograd.grad((h.float() ** 2).sum(), leaves)
    torch.cuda.synchronize()
    print(family, dtype, "NH 300 S 80 (many work items)")
