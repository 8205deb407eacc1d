"""Demo and benchmark: ``python -m xlstm_cuda.bench``.

Runs the mLSTM op on the best device available, checks each result against the
float64 reference (SPEC §5 rule: error <= 2x the same-dtype reference's error + a
floor) and prints a table of algorithm, backend, shape, dtype, time and error.
Without a GPU it says so and runs the CPU path at small shapes.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, List

import torch

import xlstm_cuda
from xlstm_cuda.families import FAMILY_DTYPES, runnable_families
from xlstm_cuda.reference import mlstm_parallel_reference

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def time_ms(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median wall time of fn in milliseconds (synchronized on CUDA)."""
    fn()  # warm-up: module loads, allocator growth
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def make_inputs(B, NH, S, DQK, DV, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    q, k, v = rnd(B, NH, S, DQK), rnd(B, NH, S, DQK), rnd(B, NH, S, DV)
    i, f = rnd(B, NH, S), rnd(B, NH, S) + 3.0
    return [t.to(device=device, dtype=dtype if t.dim() == 4 else torch.float32)
            for t in (q, k, v, i, f)]


def parity_error(inputs, h) -> tuple:
    """(error of h, error of the same-dtype reference), both vs float64."""
    ref64 = mlstm_parallel_reference(*[t.double() for t in inputs])
    ref_lp = mlstm_parallel_reference(*inputs)
    err = (h.double() - ref64).abs().max().item()
    err_lp = (ref_lp.double() - ref64).abs().max().item()
    return err, err_lp


def run_case(shape, dtype_name, algorithm, backend, device, reps):
    B, NH, S, DQK, DV = shape
    dtype = DTYPES[dtype_name]
    inputs = make_inputs(B, NH, S, DQK, DV, dtype, device)
    try:
        kernel = xlstm_cuda.selected_kernel(inputs[0], inputs[2], algorithm, backend)
    except (TypeError, ValueError) as exc:  # e.g. bf16 on the fp16-only sm75 family
        print(f"skipped: {algorithm} {backend} {dtype_name}: {exc}")
        return None
    fn = lambda: xlstm_cuda.mlstm(*inputs, algorithm=algorithm, backend=backend)  # noqa: E731
    ms = time_ms(fn, device, reps)
    row = {
        "algorithm": algorithm,
        "kernel": kernel,
        "backend": backend, "shape": f"B{B} NH{NH} S{S} {DQK}/{DV}", "dtype": dtype_name,
        "ms": ms,
    }
    err, err_lp = parity_error(inputs, fn())
    row["err"] = err
    row["ok"] = "yes" if err <= 2 * err_lp + 1e-3 else "NO"
    return row


# The speed tables' shapes: B*S = 65,536 tokens (the TFLA paper's setup); NH 32 x D 128
# (compared with causal SDPA) and the xLSTM-7B heads NH 16, DQK 128, DV 256.
SPEED_SHAPES = [(65536 // S, 32, S, 128, 128) for S in (1024, 4096, 16384)] + \
    [(65536 // S, 16, S, 128, 256) for S in (1024, 4096)]


def causal_flops(B, NH, S, DQK, DV) -> float:
    """FLOPs of the two causal matmuls (Q K^T and P V), as FlashAttention counts them."""
    return 2.0 * B * NH * S * S * (DQK + DV) / 2


def speed_table(families, reps):
    """bf16 forward at the TFLA-paper token count (B*S = 65,536) next to causal SDPA."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    device = torch.device("cuda")
    shapes = SPEED_SHAPES
    print("\nSpeed, bf16 forward (sm75: fp16), median ms and TFLOP/s (causal matmul FLOPs)")
    header = f"{'shape (B NH S DQK/DV)':<24} {'implementation':<34} {'ms':>8} {'TFLOP/s':>8}"
    print(header)
    print("-" * len(header))
    for B, NH, S, DQK, DV in shapes:
        q, k, v, i, f = make_inputs(B, NH, S, DQK, DV, torch.bfloat16, device)
        flops = causal_flops(B, NH, S, DQK, DV)
        label = f"{B} {NH} {S} {DQK}/{DV}"
        runs = []
        for fam in families:
            # Each family in its own dtype: sm75 is fp16-only (Turing has no bf16 MMA).
            fp16_only = torch.bfloat16 not in FAMILY_DTYPES[fam]
            x = [t.half() if t.dim() == 4 else t for t in (q, k, v, i, f)] if fp16_only \
                else (q, k, v, i, f)
            for algorithm in ("parallel", "chunkwise"):
                kernel = xlstm_cuda.selected_kernel(x[0], x[2], algorithm, fam)
                if "aten" in kernel:
                    continue  # the ATen path is a correctness baseline, not timed at this size
                name = f"mlstm {kernel}" + (" fp16" if fp16_only else "")
                runs.append((name, lambda fam=fam, x=x, algorithm=algorithm: xlstm_cuda.mlstm(
                    *x, algorithm=algorithm, backend=fam)))
        if DQK == DV:
            for name, backend in (("sdpa cuDNN", SDPBackend.CUDNN_ATTENTION),
                                  ("sdpa flash", SDPBackend.FLASH_ATTENTION)):
                def attn(backend=backend, q=q, k=k, v=v):
                    with sdpa_kernel(backend):
                        return torch.nn.functional.scaled_dot_product_attention(
                            q, k, v, is_causal=True)
                runs.append((name, attn))
        for name, fn in runs:
            try:
                ms = time_ms(fn, device, reps)
                print(f"{label:<24} {name:<34} {ms:>8.3f} {flops / ms / 1e9:>8.1f}")
            except RuntimeError as exc:  # e.g. an SDPA backend unavailable on this GPU
                print(f"{label:<24} {name:<34} {'n/a':>8} ({str(exc).splitlines()[0][:60]})")
        del q, k, v, i, f
        torch.cuda.empty_cache()


def train_speed_table(reps, chunk_sizes=(None,)):
    """bf16 forward + backward at B*S = 65,536 next to causal SDPA forward + backward, with
    the peak memory of one step. TFLOP/s count 3.5x the forward's causal matmul FLOPs
    (2 forward + 5 backward matmuls, FlashAttention's convention)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    device = torch.device("cuda")
    shapes = SPEED_SHAPES
    print("\nSpeed, bf16 forward + backward, median ms, TFLOP/s (3.5x causal fwd FLOPs), peak GiB")
    header = (f"{'shape (B NH S DQK/DV)':<24} {'implementation':<34} {'ms':>8} {'TFLOP/s':>8} "
              f"{'peak GiB':>9}")
    print(header)
    print("-" * len(header))
    for B, NH, S, DQK, DV in shapes:
        q, k, v, i, f = make_inputs(B, NH, S, DQK, DV, torch.bfloat16, device)
        leaves = [t.detach().requires_grad_(True) for t in (q, k, v, i, f)]
        gh = torch.randn(B, NH, S, DV, device=device, dtype=torch.bfloat16)
        flops = 3.5 * causal_flops(B, NH, S, DQK, DV)
        label = f"{B} {NH} {S} {DQK}/{DV}"
        runs = []
        for algorithm, chunk in [("parallel", None)] + [("chunkwise", c) for c in chunk_sizes]:
            fwd = xlstm_cuda.selected_kernel(q, v, algorithm, "auto").split(":")[-1]
            bwd = xlstm_cuda.selected_backward_kernel(q, v, algorithm, "auto").split(":")[-1]
            name = f"mlstm {fwd}+{bwd}".replace("_parallel", "").replace("_backward", "")
            name += f" L{chunk}" if chunk else ""

            def mlstm_step(leaves=leaves, gh=gh, algorithm=algorithm, chunk=chunk):
                h = xlstm_cuda.mlstm(*leaves, algorithm=algorithm, chunk_size=chunk)
                return torch.autograd.grad(h, leaves, gh)
            runs.append((name, mlstm_step))
        if DQK == DV:
            for name, backend in (("sdpa cuDNN", SDPBackend.CUDNN_ATTENTION),
                                  ("sdpa flash", SDPBackend.FLASH_ATTENTION)):
                def attn_step(backend=backend, leaves=leaves, gh=gh):
                    with sdpa_kernel(backend):
                        o = torch.nn.functional.scaled_dot_product_attention(
                            *leaves[:3], is_causal=True)
                    return torch.autograd.grad(o, leaves[:3], gh)
                runs.append((name, attn_step))
        for name, fn in runs:
            try:
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                ms = time_ms(fn, device, reps)
                peak = (torch.cuda.max_memory_allocated(device) - base) / 2**30
                print(f"{label:<24} {name:<34} {ms:>8.3f} {flops / ms / 1e9:>8.1f} {peak:>9.2f}")
            except RuntimeError as exc:
                print(f"{label:<24} {name:<34} {'n/a':>8} ({str(exc).splitlines()[0][:60]})")
        del q, k, v, i, f, leaves, gh
        torch.cuda.empty_cache()


def runnable_backends(device) -> List[str]:
    if device.type != "cuda":
        return ["auto"]
    return ["auto"] + runnable_families(device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU exists")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--no-speed", action="store_true", help="skip the GPU speed tables")
    parser.add_argument("--train-speed-only", action="store_true",
                        help="only the forward + backward speed table (GPU)")
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=None,
                        help="chunk lengths of the chunkwise rows of the fwd+bwd table")
    args = parser.parse_args(argv)

    if torch.cuda.is_available() and not args.cpu:
        device = torch.device("cuda")
        print(f"GPU: {torch.cuda.get_device_name(device)} "
              f"(compute capability {'.'.join(map(str, torch.cuda.get_device_capability()))})")
        shapes = [(1, 4, 2048, 128, 128), (2, 16, 1024, 128, 256)]
        dtypes = ["bf16", "fp16", "fp32"]
        reps = args.reps or 20
    else:
        device = torch.device("cpu")
        print("No CUDA GPU available (or --cpu): running the CPU implementation at small shapes.")
        shapes = [(1, 2, 257, 32, 64), (2, 4, 512, 64, 64)]
        dtypes = ["fp32", "bf16"]
        reps = args.reps or 3
    print(f"xlstm_cuda {xlstm_cuda.__version__}, torch {torch.__version__}, "
          f"build: CUDA={xlstm_cuda.WITH_CUDA} families={xlstm_cuda.KERNEL_FAMILIES}")

    if args.train_speed_only:
        if device.type != "cuda":
            raise SystemExit("--train-speed-only needs a CUDA GPU")
        train_speed_table(reps, args.chunk_sizes or (None,))
        return
    rows = []
    for shape in shapes:
        for dtype_name in dtypes:
            for algorithm in xlstm_cuda.ALGORITHMS[1:]:  # every named algorithm, not "auto"
                for backend in runnable_backends(device):
                    row = run_case(shape, dtype_name, algorithm, backend, device, reps)
                    if row is not None:
                        rows.append(row)

    header = f"{'algorithm':<9} {'kernel':<28} {'backend':<8} {'shape':<26} {'dtype':<5} {'ms':>9} {'max err':>9} {'parity':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['algorithm']:<9} {r['kernel']:<28} {r['backend']:<8} {r['shape']:<26} {r['dtype']:<5} "
              f"{r['ms']:>9.3f} {r['err']:>9.2e} {r['ok']:>6}")
    if device.type == "cuda" and not args.no_speed:
        speed_table([b for b in runnable_backends(device) if b != "auto"], reps)
        train_speed_table(reps, args.chunk_sizes or (None,))
    failed = [r for r in rows if r["ok"] == "NO"]
    if failed:
        raise SystemExit(f"{len(failed)} case(s) failed the parity check")


if __name__ == "__main__":
    main()
