"""Side-by-side speed of xlstm_cuda and the peer NX-AI mlstm_kernels (Triton), bf16,
forward and forward+backward, at B*S = 65,536 tokens. Each shape runs in its own
process (a Triton abort must not take the other cases with it).

    python benchmarks/peer_mlstm_kernels.py [--peer chunkwise--triton_limit_chunk] [--reps 10]
        [--lengths 4096 16384]

Needs mlstm_kernels importable (e.g. `pip install --no-deps mlstm_kernels==2.0.6`, or
PYTHONPATH pointing at an unpacked wheel) and a CUDA GPU.
"""
import argparse
import json
import subprocess
import sys

SHAPES = [(64, 16, 1024, 128, 256), (16, 16, 4096, 128, 256),
          (64, 32, 1024, 128, 128), (16, 32, 4096, 128, 128), (4, 32, 16384, 128, 128)]

CHILD = r"""
import json, sys, torch
import xlstm_cuda
from mlstm_kernels.torch import get_mlstm_kernel

B, NH, S, DQK, DV = json.loads(sys.argv[1])
peer_name, reps = sys.argv[2], int(sys.argv[3])
dev = torch.device("cuda")
g = torch.Generator(device="cpu").manual_seed(0)
mk = lambda *s: torch.randn(*s, generator=g).to(dev, torch.bfloat16)
q, k, v = mk(B, NH, S, DQK), mk(B, NH, S, DQK), mk(B, NH, S, DV)
i, f = mk(B, NH, S), (mk(B, NH, S).float() + 3).to(torch.bfloat16)
gh = mk(B, NH, S, DV)
peer = get_mlstm_kernel(peer_name)
impls = {
    "xlstm_cuda parallel": lambda *a: xlstm_cuda.mlstm(*a, algorithm="parallel"),
    "xlstm_cuda chunkwise": lambda *a: xlstm_cuda.mlstm(*a, algorithm="chunkwise"),
    "mlstm_kernels " + peer_name: lambda *a: peer(*a, chunk_size=64),
}

def median_ms(fn):
    fn()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    return sorted(ts)[len(ts) // 2]

rows = []
for name, fn in impls.items():
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v, i, f)]
    fwd = median_ms(lambda: fn(q, k, v, i, f))
    fwdbwd = median_ms(lambda: torch.autograd.grad(fn(*leaves), leaves, gh))
    rows.append((name, fwd, fwdbwd))
print("RESULT " + json.dumps(rows))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", default="chunkwise--triton_limit_chunk")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--lengths", type=int, nargs="*", default=None,
                    help="only the shapes with these sequence lengths")
    args = ap.parse_args()
    print(f"{'shape (B NH S DQK/DV)':<24} {'implementation':<48} {'fwd ms':>8} {'fwd+bwd ms':>11}")
    for shape in SHAPES:
        if args.lengths and shape[2] not in args.lengths:
            continue
        label = "{} {} {} {}/{}".format(*shape)
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(shape), args.peer,
                               str(args.reps)], capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            err = (proc.stderr.strip().splitlines() or ["no output"])[-1][:80]
            print(f"{label:<24} failed (exit {proc.returncode}): {err}")
            continue
        for name, fwd, fwdbwd in json.loads(lines[0][len("RESULT "):]):
            print(f"{label:<24} {name:<48} {fwd:>8.3f} {fwdbwd:>11.3f}")


if __name__ == "__main__":
    main()
