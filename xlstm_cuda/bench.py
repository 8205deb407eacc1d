"""Demo and benchmark: ``python -m xlstm_cuda.bench``.

Runs the mLSTM op on the best device available, checks each result against the
float64 reference (SPEC §5 rule: error <= 2x the same-dtype reference's error + a
floor) and prints a table of algorithm, backend, shape, dtype, time and error.
Without a GPU it says so and runs the CPU path at small shapes.
"""
from __future__ import annotations

import argparse
import math
import time
from typing import Callable, List

import torch

import xlstm_cuda
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


def run_case(shape, dtype_name, algorithm, backend, device, reps, check):
    B, NH, S, DQK, DV = shape
    dtype = DTYPES[dtype_name]
    inputs = make_inputs(B, NH, S, DQK, DV, dtype, device)
    fn = lambda: xlstm_cuda.mlstm(*inputs, algorithm=algorithm, backend=backend)  # noqa: E731
    ms = time_ms(fn, device, reps)
    row = {
        "algorithm": algorithm,
        "kernel": xlstm_cuda.selected_kernel(inputs[0], inputs[2], algorithm=algorithm, backend=backend),
        "backend": backend, "shape": f"B{B} NH{NH} S{S} {DQK}/{DV}", "dtype": dtype_name,
        "ms": ms, "err": float("nan"), "ok": "-",
    }
    if check:
        err, err_lp = parity_error(inputs, fn())
        row["err"] = err
        row["ok"] = "yes" if err <= 2 * err_lp + 1e-3 else "NO"
    return row


def runnable_backends(device) -> List[str]:
    if device.type != "cuda":
        return ["auto"]
    cc = torch.cuda.get_device_capability(device)
    can = {"sm90": cc == (9, 0), "sm80": cc >= (8, 0), "sm75": cc >= (7, 5)}
    return ["auto"] + [f for f in xlstm_cuda.KERNEL_FAMILIES if can[f]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU exists")
    parser.add_argument("--reps", type=int, default=None)
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

    rows = []
    for shape in shapes:
        for dtype_name in dtypes:
            for algorithm in xlstm_cuda.ALGORITHMS[1:]:  # every named algorithm, not "auto"
                for backend in runnable_backends(device):
                    rows.append(run_case(shape, dtype_name, algorithm, backend, device, reps,
                                         check=True))

    header = f"{'algorithm':<9} {'kernel':<22} {'backend':<8} {'shape':<26} {'dtype':<5} {'ms':>9} {'max err':>9} {'parity':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['algorithm']:<9} {r['kernel']:<22} {r['backend']:<8} {r['shape']:<26} {r['dtype']:<5} "
              f"{r['ms']:>9.3f} {r['err']:>9.2e} {r['ok']:>6}")
    failed = [r for r in rows if r["ok"] == "NO"]
    if failed:
        raise SystemExit(f"{len(failed)} case(s) failed the parity check")


if __name__ == "__main__":
    main()
