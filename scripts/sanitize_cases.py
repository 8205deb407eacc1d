"""Small ragged-shape runs of every CUDA kernel family, for compute-sanitizer
(memcheck, racecheck) in scripts/gpu_check.sh. B=1, NH=2, S=100 (not a multiple
of any tile), with and without initial state."""
import torch

import xlstm_cuda

cc = torch.cuda.get_device_capability()
runs_on = {"sm90": cc == (9, 0), "sm80": cc >= (8, 0), "sm75": cc >= (7, 5)}
for family in [f for f in xlstm_cuda.KERNEL_FAMILIES if runs_on[f]]:
    dtypes = [torch.float16] if family == "sm75" else [torch.float16, torch.bfloat16]
    for dtype in dtypes:
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
