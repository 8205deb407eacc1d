"""Forward + backward time of one mLSTM step next to cuDNN causal attention, in one process.

    python benchmarks/train_vs_cudnn.py --shape 64 32 1024 128 128 --rounds 2

The quick A/B of a backward change, the training counterpart of fwd_vs_cudnn.py: one
step is the forward and the gradients of q, k, v, i, f for a random dh (cuDNN: of q, k,
v), bf16, timed with triton's do_bench (median). cuDNN runs at the same B, NH, S with
128-wide heads; the time ratio is printed where DQK = DV = 128 (the same matmul FLOPs).
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
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    B, NH, S, DQK, DV = args.shape
    device = torch.device("cuda")
    leaves = [t.requires_grad_(True)
              for t in make_inputs(B, NH, S, DQK, DV, torch.bfloat16, device)]
    dh = torch.randn(B, NH, S, DV, device=device, dtype=torch.bfloat16)

    def step():
        h = xlstm_cuda.mlstm(*leaves, algorithm=args.algorithm)
        return torch.autograd.grad(h, leaves, dh)

    qkv = [torch.randn(B, NH, S, 128, device=device, dtype=torch.bfloat16).requires_grad_(True)
           for _ in range(3)]
    do = torch.randn_like(qkv[0])

    def attention_step():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            o = torch.nn.functional.scaled_dot_product_attention(*qkv, is_causal=True)
        return torch.autograd.grad(o, qkv, do)

    kernels = (xlstm_cuda.selected_kernel(leaves[0], leaves[2], args.algorithm) + " + " +
               xlstm_cuda.selected_backward_kernel(leaves[0], leaves[2], args.algorithm))
    for _ in range(args.rounds):
        ours = do_bench(step, warmup=10, rep=200, return_mode="median")
        cudnn = do_bench(attention_step, warmup=10, rep=200, return_mode="median")
        ratio = f", time ratio {ours / cudnn:.3f}" if DQK == DV == 128 else ""
        print(f"{B} {NH} {S} {DQK}/{DV}: {kernels} {ours:.3f} ms, cuDNN (128/128) {cudnn:.3f} ms"
              f"{ratio}")


if __name__ == "__main__":
    main()
