"""Small ragged-shape runs of every CUDA kernel family, for compute-sanitizer
(memcheck, racecheck) in scripts/gpu_check.sh. B=1, NH=2, S=100 (not a multiple
of any tile), with and without initial state."""
import torch

import xlstm_cuda
from xlstm_cuda.families import FAMILY_DTYPES, runnable_families

for family in runnable_families():
    for dtype in FAMILY_DTYPES[family]:
        for dqk, dv in [(64, 128), (256, 64)]:
            q, k = (torch.randn(1, 2, 100, dqk, device="cuda", dtype=dtype) for _ in range(2))
            v = torch.randn(1, 2, 100, dv, device="cuda", dtype=dtype)
            i, f = torch.randn(1, 2, 100, device="cuda"), torch.randn(1, 2, 100, device="cuda") + 3
            c0 = torch.randn(1, 2, dqk, dv, device="cuda")
            n0, m0 = torch.randn(1, 2, dqk, device="cuda"), torch.randn(1, 2, 1, device="cuda")
            for state in [(None, None, None), (c0, n0, m0)]:
                h = xlstm_cuda.mlstm(q, k, v, i, f, *state, algorithm="parallel", backend=family)
                torch.cuda.synchronize()
            print(family, dtype, dqk, dv, xlstm_cuda.selected_kernel(q, v, "parallel", family))
