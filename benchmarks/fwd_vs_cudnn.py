"""Forward time of one mLSTM kernel next to cuDNN causal attention, in one process.

    python benchmarks/fwd_vs_cudnn.py --shape 64 32 1024 128 128 --rounds 2
    python benchmarks/fwd_vs_cudnn.py --shape 64 32 1024 128 128 --profile-only  # for ncu

The quick A/B of a forward kernel change: the ratio to cuDNN (same B, NH, S with 128-wide
heads, bf16; printed where DQK = DV = 128, i.e. the same FLOPs) is comparable across runs
and cards, the absolute times are not. The mLSTM inputs
come from `xlstm_cuda.bench.make_inputs`; `--profile-only` runs the forward four times
and exits (e.g. under `ncu -k regex:mlstm_fwd_sm90 --launch-skip 2 --launch-count 1`).
"""
import argparse

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

import xlstm_cuda
from xlstm_cuda.bench import make_inputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=5, default=[64, 32, 1024, 128, 128],
                        metavar=("B", "NH", "S", "DQK", "DV"))
    parser.add_argument("--algorithm", default="parallel")
    parser.add_argument("--backend", default="sm90")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile-only", action="store_true")
    args = parser.parse_args()
    B, NH, S, DQK, DV = args.shape
    device = torch.device("cuda")
    inputs = make_inputs(B, NH, S, DQK, DV, torch.bfloat16, device)

    def forward():
        return xlstm_cuda.mlstm(*inputs, algorithm=args.algorithm, backend=args.backend)

    if args.profile_only:
        for _ in range(4):
            forward()
        torch.cuda.synchronize()
        return
    q = torch.randn(B, NH, S, 128, device=device, dtype=torch.bfloat16)
    k, v = torch.randn_like(q), torch.randn_like(q)

    def attention():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    kernel = xlstm_cuda.selected_kernel(inputs[0], inputs[2], args.algorithm, args.backend)
    same_flops = DQK == DV == 128
    for _ in range(args.rounds):
        ours = do_bench(forward, warmup=25, rep=200, return_mode="median")
        cudnn = do_bench(attention, warmup=25, rep=200, return_mode="median")
        ratio = f", throughput ratio {cudnn / ours:.3f}" if same_flops else ""
        print(f"{B} {NH} {S} {DQK}/{DV}: {kernel} {ours:.3f} ms, cuDNN (128/128) {cudnn:.3f} ms"
              f"{ratio}")


if __name__ == "__main__":
    main()
