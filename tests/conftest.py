"""Shared helpers for the xlstm_cuda test suite.

* ``make_inputs`` draws fresh random mLSTM inputs (seeded per call for reproducibility).
* ``assert_close_to_reference`` is the accuracy rule of SPEC §5.
* ``reference_pair`` computes the float64 oracle and the same reference in the input
  dtype (the baseline of the accuracy rule).
* ``requires_cuda`` / ``KERNEL_FAMILY_PARAMS`` are the GPU markers (SPEC §6).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import pytest
import torch

import xlstm_cuda
from xlstm_cuda import mlstm_parallel_reference

# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def make_inputs(B=1, NH=2, S=17, DQK=8, DV=16, dtype=torch.float32, device="cpu",
                with_state=False, seed=0, gates="typical") -> Dict[str, Optional[torch.Tensor]]:
    """Fresh random inputs for ``xlstm_cuda.mlstm`` as a dict of keyword arguments.

    q, k, v ~ N(0, 1) in ``dtype``; gates in float32:
      gates="typical": i ~ 2 N(0,1), f ~ 2 N(0,1) + 3 (the usual forget-gate bias),
      gates="extreme": |i|, |f| up to 1e4 (SPEC §4: outputs must stay finite),
      gates="floor":   mostly strongly negative i (|b_t| < exp(-m_t): the normalizer's
                       floor branch is active) with an open gate every 9 steps, so rows
                       on both sides of the floor occur.
      gates="wide":    i ~ 12 N(0,1): the gate terms of one 64- or 128-key tile spread
                       by about 40 to 80 (natural log), around the limit up to which the
                       sm90 forward factors a masked tile's decay into a row factor (up
                       to e^64) times column factors, and past it.
    The optional initial state is float32 (float64 for float64 inputs): C_0, n_0 ~
    N(0, 1), m_0 ~ N(0, 1).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q, k = randn(B, NH, S, DQK), randn(B, NH, S, DQK)
    v = randn(B, NH, S, DV)
    if gates == "typical":
        i = 2.0 * randn(B, NH, S)
        f = 2.0 * randn(B, NH, S) + 3.0
    elif gates == "extreme":
        i = (1e4 * torch.tanh(randn(B, NH, S))).clamp(-1e4, 1e4)
        f = (1e4 * torch.tanh(randn(B, NH, S))).clamp(-1e4, 1e4)
        i[..., 0], f[..., 0] = 1e4, -1e4   # make sure the extremes themselves occur
        if S > 1:
            i[..., 1], f[..., 1] = -1e4, 1e4
    elif gates == "wide":
        i = 12.0 * randn(B, NH, S)
        f = 2.0 * randn(B, NH, S) + 3.0
    elif gates == "floor":
        # Mostly tiny input gates (|b_t| ~ e^-12 < exp(-m_t) ~ 1: floor active), with an
        # occasional open gate (i = +2) after which |b_t| is O(1) and the floor inactive.
        i = -12.0 + 0.5 * randn(B, NH, S)
        i[..., 5::9] = 2.0
        f = 4.0 + randn(B, NH, S)
    else:
        raise ValueError(gates)
    gate_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    state_dtype = gate_dtype
    out = dict(
        q=q.to(dtype), k=k.to(dtype), v=v.to(dtype),
        i=i.to(gate_dtype), f=f.to(gate_dtype),
        c_initial=None, n_initial=None, m_initial=None,
    )
    if with_state:
        out["c_initial"] = randn(B, NH, DQK, DV).to(state_dtype)
        out["n_initial"] = randn(B, NH, DQK).to(state_dtype)
        out["m_initial"] = randn(B, NH, 1).to(state_dtype)
    return {key: (t.to(device) if t is not None else None) for key, t in out.items()}


def to_dtype(inputs, dtype):
    """The inputs upcast/downcast: q, k, v to ``dtype``; gates and states to float64 when
    ``dtype`` is float64 (otherwise unchanged)."""
    out = {}
    for key, t in inputs.items():
        if t is None:
            out[key] = None
        elif key in ("q", "k", "v"):
            out[key] = t.detach().to(dtype)
        else:
            out[key] = t.detach().to(torch.float64) if dtype == torch.float64 else t.detach()
    return out


def reference_pair(inputs, eps=1e-6, return_last_states=False):
    """(ref64, ref_lowp): ``mlstm_parallel_reference`` on the float64-upcast inputs and on
    the inputs as given (the input dtype, same device)."""
    ref64 = mlstm_parallel_reference(**to_dtype(inputs, torch.float64), eps=eps,
                                     return_last_states=return_last_states)
    ref_lowp = mlstm_parallel_reference(**{k: (t.detach() if t is not None else None)
                                           for k, t in inputs.items()},
                                        eps=eps, return_last_states=return_last_states)
    return ref64, ref_lowp


# ---------------------------------------------------------------------------
# Accuracy rule (SPEC §5)
# ---------------------------------------------------------------------------

# Absolute floor of the accuracy rule, relative to the size of the answer
# (floor = ATOL_FLOOR[dtype] * max(1, max|ref64|)). Justification:
# * float16 / bfloat16: outputs are rounded to the input dtype; one rounding of an O(1)
#   value costs up to a unit roundoff u (fp16 u = 2^-11 ~ 4.9e-4, bf16 u = 2^-8 ~ 3.9e-3).
#   The floor is ~2 u for fp16 and ~1 u for bf16: it only matters where the low-precision
#   reference happens to be exact at the worst element.
# * float32: accumulation in float32 over up to S*D ~ 4e3 terms; the rounding of the two
#   summation orders (chunkwise vs quadratic form) is ~sqrt(n) u ~ 1e-5 relative.
# * float64: the low-precision reference IS the float64 reference, so the bound is the
#   floor alone: 1e-10 leaves room for cancellation in the normalizer b_t, yet is ~6
#   orders of magnitude below any float32 contamination of a float64 path.
ATOL_FLOOR = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 1e-3,
    torch.bfloat16: 4e-3,
}


def max_abs_err(a, b):
    return (a.detach().to(torch.float64) - b.detach().to(torch.float64)).abs().max().item()


def assert_close_to_reference(out, out_ref64, out_ref_lowp, name, dtype=None):
    """SPEC §5: max|out - ref64| <= 2 * max|ref_lowp - ref64| + floor. NaN/inf in ``out``
    where the float64 reference is finite never passes (nor does an unwritten element of
    a NaN-poisoned output). The floor follows the dtype ``out`` is delivered in (e.g.
    float32 for the final states even with bf16 inputs) unless ``dtype`` is given."""
    assert out.shape == out_ref64.shape, \
        f"{name}: shape {tuple(out.shape)} != {tuple(out_ref64.shape)}"
    dtype = dtype or out.dtype
    ref_finite = torch.isfinite(out_ref64)
    assert ref_finite.all(), f"{name}: the float64 reference itself is not finite (test bug)"
    out_finite = torch.isfinite(out.detach())
    assert out_finite.all(), (
        f"{name}: {int((~out_finite).sum())} non-finite elements (of {out.numel()}) where the "
        f"float64 reference is finite")
    err = max_abs_err(out, out_ref64)
    base = max_abs_err(out_ref_lowp, out_ref64)
    scale = max(1.0, out_ref64.detach().abs().max().item())
    floor = ATOL_FLOOR[dtype] * scale
    bound = 2.0 * base + floor
    assert not math.isnan(err) and err <= bound, (
        f"{name}: max abs error {err:.3e} vs float64 reference exceeds the accuracy-rule "
        f"bound {bound:.3e} (= 2 * {base:.3e} reference-in-{dtype} error + floor {floor:.3e})")


def assert_outputs_close(out, ref64, ref_lowp, with_states):
    """Accuracy rule over h and, with ``with_states``, the final (C, n, m)."""
    if with_states:
        h, (c, n, m) = out
        h64, (c64, n64, m64) = ref64
        hl, (cl, nl, ml) = ref_lowp
        assert_close_to_reference(h, h64, hl, "h")
        assert_close_to_reference(c, c64, cl, "c_last")
        assert_close_to_reference(n, n64, nl, "n_last")
        assert_close_to_reference(m, m64, ml, "m_last")
    else:
        assert_close_to_reference(out, ref64, ref_lowp, "h")


def rel_err(a, b):
    """max|a - b| / max(max|b|, tiny), in float64."""
    denom = max(b.detach().to(torch.float64).abs().max().item(), 1e-300)
    return max_abs_err(a, b) / denom


def floor_active_rows(inputs):
    """Boolean (B, NH, S): rows where the normalizer floor exp(-m_t) exceeds |b_t|,
    computed independently in float64 by the step-by-step recurrence of SPEC §1."""
    x = to_dtype(inputs, torch.float64)
    q, k, i, f = x["q"], x["k"], x["i"], x["f"]
    B, NH, S, DQK = q.shape
    n = x["n_initial"] if x["n_initial"] is not None else q.new_zeros(B, NH, DQK)
    m = x["m_initial"][..., 0] if x["m_initial"] is not None else q.new_zeros(B, NH)
    lf = torch.nn.functional.logsigmoid(f)
    active = []
    for t in range(S):
        m_new = torch.maximum(lf[..., t] + m, i[..., t])
        n = torch.exp(lf[..., t] + m - m_new)[..., None] * n + \
            torch.exp(i[..., t] - m_new)[..., None] * k[:, :, t]
        m = m_new
        b = (n * q[:, :, t] / math.sqrt(DQK)).sum(-1)
        active.append(b.abs() < torch.exp(-m))
    return torch.stack(active, dim=-1)


# ---------------------------------------------------------------------------
# GPU markers (SPEC §6)
# ---------------------------------------------------------------------------

_SMALL = 1 << 20  # the caching allocator serves requests <= 1 MiB from its small pool


def _reusable_free_blocks():
    """(pool, bytes) of the cached free blocks a later allocation can be handed: blocks
    of small-pool segments, and blocks > 1 MiB of large-pool segments."""
    out = []
    for seg in torch.cuda.memory_snapshot():
        for blk in seg["blocks"]:
            if blk["state"] == "inactive" and (seg["segment_type"] == "small"
                                               or blk["size"] > _SMALL):
                out.append((seg["segment_type"], blk["size"]))
    return out


def poison_cuda_allocator():
    """Fill the CUDA caching allocator's free memory with NaN, so that an output element a
    kernel forgets to write reads as NaN (SPEC §5). Fully free segments are released;
    every remaining reusable free block is occupied (largest first, so best-fit hands
    each request that block; small-pool blocks in pieces of <= 1 MiB), fresh large and
    small segments are added, and all of it is NaN-filled and freed back to the cache,
    where the next allocations find it."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    held = []
    for _ in range(64):
        blocks = _reusable_free_blocks()
        if not blocks:
            break
        for pool, size in sorted(blocks, key=lambda b: -b[1]):
            nbytes = min(size, _SMALL) if pool == "small" else size
            held.append(torch.empty(nbytes // 4, device="cuda"))
    held.append(torch.empty(64 * 1024 * 1024, device="cuda"))               # 256 MiB
    held += [torch.empty(64 * 1024, device="cuda") for _ in range(64)]      # small pool
    for t in held:
        t.fill_(float("nan"))
    torch.cuda.synchronize()
    del held


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="no CUDA GPU on this machine: GPU tests skipped")

# Minimum compute capability of each kernel family (SPEC §6), and whether it needs
# exactly that capability (sm_90a code only runs on 9.0).
FAMILY_CAPABILITY = {"sm90": ((9, 0), True), "sm80": ((8, 0), False), "sm75": ((7, 5), False)}


def family_runs_here(family: str) -> bool:
    if not torch.cuda.is_available():
        return False
    cc = torch.cuda.get_device_capability()
    need, exact = FAMILY_CAPABILITY[family]
    return cc == need if exact else cc >= need


def family_skip_reason(family: str) -> Optional[str]:
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine: GPU tests skipped"
    if not family_runs_here(family):
        need, exact = FAMILY_CAPABILITY[family]
        cc = torch.cuda.get_device_capability()
        return (f"kernel family {family} needs compute capability "
                f"{'exactly ' if exact else '>= '}{need[0]}.{need[1]}; this GPU is "
                f"{cc[0]}.{cc[1]}")
    return None


def _family_param(family):
    reason = family_skip_reason(family)
    marks = [pytest.mark.skipif(True, reason=reason)] if reason else []
    return pytest.param(family, marks=marks, id=family)


# One parameter per kernel family compiled into this build (xlstm_cuda.KERNEL_FAMILIES);
# a family the present GPU cannot run skips with the reason.
KERNEL_FAMILY_PARAMS = [_family_param(fam) for fam in xlstm_cuda.KERNEL_FAMILIES]


@pytest.fixture(autouse=True)
def _clean_backend_env(monkeypatch):
    """backend='auto' tests must not see a stray XLSTM_CUDA_BACKEND from the shell."""
    monkeypatch.delenv("XLSTM_CUDA_BACKEND", raising=False)


def seed_for(*parts) -> int:
    """A reproducible per-test seed (Python's hash() of str is salted per process)."""
    import zlib
    return zlib.crc32(repr(parts).encode()) % 2**31
