"""Where "auto" should switch from the parallel to the chunkwise algorithm: bf16
forward and forward + backward times of both (chunkwise at several chunk lengths) at
B*S = 65,536, NH 32 D 128 and the 7B heads NH 16 128/256, for the given lengths.
The thresholds in csrc/mlstm_dispatch.h and the default chunk length in
csrc/cuda/chunkwise_host.h quote its output (benchmarks/NOTES.md, sessions 4 and 6).

    python benchmarks/auto_threshold_sweep.py 2048 4096
"""
import sys

import torch

import xlstm_cuda
from xlstm_cuda.bench import make_inputs, time_ms

CHUNKS = (256, 512, 1024)


def main(lengths):
    dev = torch.device("cuda")
    for NH, DQK, DV in [(32, 128, 128), (16, 128, 256)]:
        for S in lengths:
            B = 65536 // S
            q, k, v, i, f = make_inputs(B, NH, S, DQK, DV, torch.bfloat16, dev)
            leaves = [t.detach().requires_grad_(True) for t in (q, k, v, i, f)]
            gh = torch.randn(B, NH, S, DV, device=dev, dtype=torch.bfloat16)
            row = []
            for alg, L in [("parallel", None)] + [("chunkwise", c) for c in CHUNKS if c <= S]:
                def step(alg=alg, L=L):
                    h = xlstm_cuda.mlstm(*leaves, algorithm=alg, chunk_size=L)
                    return torch.autograd.grad(h, leaves, gh)

                def fwd(alg=alg, L=L):
                    with torch.no_grad():
                        return xlstm_cuda.mlstm(*leaves, algorithm=alg, chunk_size=L)
                name = alg if L is None else f"chunkwise L{L}"
                row.append(f"{name} fwd {time_ms(fwd, dev, 5):.2f} fwd+bwd {time_ms(step, dev, 5):.2f}")
            print(f"NH {NH} {DQK}/{DV} S {S}: " + " | ".join(row), flush=True)
            del q, k, v, i, f, leaves, gh
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [2048, 4096])
