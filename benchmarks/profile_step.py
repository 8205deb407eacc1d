"""Where one bf16 forward + backward step spends its GPU time (torch.profiler).

    python benchmarks/profile_step.py --shape 16 32 4096 128 128 --algorithm chunkwise
"""
import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import xlstm_cuda
from xlstm_cuda.bench import make_inputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=5, default=[16, 32, 4096, 128, 128],
                        metavar=("B", "NH", "S", "DQK", "DV"))
    parser.add_argument("--algorithm", default="chunkwise")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    B, NH, S, DQK, DV = args.shape
    leaves = [t.requires_grad_(True) for t in make_inputs(B, NH, S, DQK, DV, torch.bfloat16,
                                                          torch.device("cuda"))]
    gh = torch.randn(B, NH, S, DV, device="cuda", dtype=torch.bfloat16)

    def step():
        h = xlstm_cuda.mlstm(*leaves, algorithm=args.algorithm, chunk_size=args.chunk_size)
        return torch.autograd.grad(h, leaves, gh)

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    print(f"shape {args.shape}, {args.algorithm}, chunk {args.chunk_size}: 3 steps")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows,
                                    max_name_column_width=70))


if __name__ == "__main__":
    main()
