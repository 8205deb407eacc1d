"""GPU parity sweep of the CUDA kernel families (SPEC §5), for scripts/gpu_check.sh.

For every compiled family the GPU can run × dtype × (DQK, DV) × S × initial state:
run xlstm_cuda.mlstm with that backend on fresh random inputs, after poisoning the
caching allocator with NaN (so an output element the kernel never writes reads
NaN), and compare h, m_rows and norm_rows with the float64 reference: pass when
max|err| <= 2 * max|err of the same-dtype reference| + floor. Prints one line per
case and a summary; exits non-zero on any failure.
"""
from __future__ import annotations

import argparse
import itertools
import sys

import torch

import xlstm_cuda
from xlstm_cuda.families import FAMILY_DTYPES, runnable_families
from xlstm_cuda.reference import mlstm_parallel_reference

FLOOR = {torch.float16: 1e-3, torch.bfloat16: 1e-3, torch.float32: 1e-5}


def poison_allocator(nbytes: int) -> None:
    """Fill a large block of the caching allocator with NaN and release it."""
    block = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda")
    block.fill_(float("nan"))
    del block


def inputs(B, NH, S, DQK, DV, dtype, with_state, gen):
    def rnd(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=gen, device="cuda") * scale + shift
    q, k, v = rnd(B, NH, S, DQK).to(dtype), rnd(B, NH, S, DQK).to(dtype), rnd(B, NH, S, DV).to(dtype)
    i, f = rnd(B, NH, S, scale=2.0), rnd(B, NH, S, scale=2.0, shift=3.0)
    state = (None, None, None)
    if with_state:
        state = (rnd(B, NH, DQK, DV, scale=0.3), rnd(B, NH, DQK, scale=0.3), rnd(B, NH, 1))
    return (q, k, v, i, f), state


def check_case(family, dtype, dqk, dv, S, with_state, gen):
    B, NH = 1, 2
    (q, k, v, i, f), state = inputs(B, NH, S, dqk, dv, dtype, with_state, gen)
    kernel = xlstm_cuda.selected_kernel(q, v, "parallel", family)
    poison_allocator(64 << 20)
    h, m_rows, norm_rows, *_ = torch.ops.xlstm.mlstm_forward(
        q, k, v, i, f, *state, 1e-6, False, "parallel", 0, family)
    torch.cuda.synchronize()
    as64 = lambda t: None if t is None else t.double()  # noqa: E731
    ref64 = mlstm_parallel_reference(q.double(), k.double(), v.double(), i.double(), f.double(),
                                     *[as64(s) for s in state])
    ref_lp = mlstm_parallel_reference(q, k, v, i, f, *state)
    err = (h.double() - ref64).abs().max().item()
    err_lp = (ref_lp.double() - ref64).abs().max().item()
    ok = bool(torch.isfinite(h).all()) and err <= 2 * err_lp + FLOOR[dtype]
    # Row statistics against the fp64 ATen path (same function, exact m and b).
    _, m64, b64, *_ = torch.ops.xlstm.mlstm_forward(
        q.double(), k.double(), v.double(), i.double(), f.double(), *[as64(s) for s in state],
        1e-6, False, "chunkwise", 0, "auto")
    m_err = (m_rows.double() - m64).abs().max().item()
    b_err = ((norm_rows.double() - b64).abs() / (b64.abs() + 1)).max().item()
    ok = ok and m_err <= 1e-3 and b_err <= 5e-2
    return ok, kernel, err, err_lp, m_err, b_err


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer lengths and head dims")
    args = parser.parse_args(argv)
    cc = torch.cuda.get_device_capability()
    print(f"GPU {torch.cuda.get_device_name()} cc {cc}; families built: {xlstm_cuda.KERNEL_FAMILIES}")
    families = runnable_families()
    dims = [(64, 64), (128, 128), (128, 256), (256, 512), (64, 512), (256, 64)]
    lengths = [1, 17, 64, 127, 1000, 4097]
    if args.quick:
        dims, lengths = [(64, 64), (128, 256)], [1, 17, 127, 1000]
    gen = torch.Generator(device="cuda").manual_seed(1234)
    failures = total = 0
    for family in families:
        for dtype, (dqk, dv), S, st in itertools.product(FAMILY_DTYPES[family], dims, lengths,
                                                         (False, True)):
            ok, kernel, err, err_lp, m_err, b_err = check_case(family, dtype, dqk, dv, S, st, gen)
            total += 1
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {family} {kernel:<18} {str(dtype)[6:]:<8} "
                  f"DQK={dqk:<3} DV={dv:<3} S={S:<5} state={int(st)} err={err:.2e} "
                  f"(2x ref {2 * err_lp:.2e}) m_err={m_err:.1e} b_rel={b_err:.1e}")
    print(f"parity sweep: {total - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
