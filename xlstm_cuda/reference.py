"""Pure-PyTorch mLSTM references: the test oracle (see docs/semantics.md).

Two independent formulations of the same function:

* ``mlstm_recurrent_reference`` — the step-by-step recurrence, one time step at a
  time. Slow, O(S) memory, closest to the definition.
* ``mlstm_parallel_reference`` — the quadratic ("parallel") form with an explicit
  S×S decay matrix. O(S²) memory; differentiable, and the form used for gradient
  checks (the stabilizer ``m`` is detached, as SPEC §2 prescribes).

Both accept any floating dtype and compute in it (gates in at least float32), so
"the reference in the input dtype" of the accuracy rule is just a call with the
low-precision inputs, and the float64 oracle a call with upcast ones.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

State = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _gate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _default_state(q: torch.Tensor, v: torch.Tensor, c0, n0, m0, dtype) -> State:
    B, NH, _, DQK = q.shape
    DV = v.shape[-1]
    if c0 is None:
        c0 = q.new_zeros((B, NH, DQK, DV), dtype=dtype)
    if n0 is None:
        n0 = q.new_zeros((B, NH, DQK), dtype=dtype)
    if m0 is None:
        m0 = q.new_zeros((B, NH, 1), dtype=dtype)
    return c0.to(dtype), n0.to(dtype), m0.to(dtype)


def mlstm_recurrent_reference(
    q, k, v, i, f, c_initial=None, n_initial=None, m_initial=None,
    eps: float = 1e-6, return_last_states: bool = False,
):
    """The recurrence of SPEC §1, step by step. State math runs in float32 (float64
    for float64 inputs); h is returned in q's dtype."""
    sd = _gate_dtype(q.dtype)
    B, NH, S, DQK = q.shape
    C, n, m = _default_state(q, v, c_initial, n_initial, m_initial, sd)
    m = m[..., 0]
    scale = 1.0 / math.sqrt(DQK)
    lf_all = F.logsigmoid(f.to(sd))
    i_all = i.to(sd)
    hs = []
    for t in range(S):
        qt, kt, vt = (x[:, :, t].to(sd) for x in (q, k, v))
        m_new = torch.maximum(lf_all[:, :, t] + m, i_all[:, :, t])
        fg = torch.exp(lf_all[:, :, t] + m - m_new)
        ig = torch.exp(i_all[:, :, t] - m_new)
        C = fg[..., None, None] * C + ig[..., None, None] * kt[..., :, None] * vt[..., None, :]
        n = fg[..., None] * n + ig[..., None] * kt
        m = m_new
        qs = qt * scale
        num = torch.einsum("bhd,bhde->bhe", qs, C)
        den = torch.maximum((n * qs).sum(-1).abs(), torch.exp(-m)) + eps
        hs.append(num / den[..., None])
    h = torch.stack(hs, dim=2).to(q.dtype)
    if return_last_states:
        return h, (C, n, m[..., None])
    return h


def mlstm_parallel_reference(
    q, k, v, i, f, c_initial=None, n_initial=None, m_initial=None,
    eps: float = 1e-6, return_last_states: bool = False,
):
    """The quadratic form of SPEC §1. Matmuls run in q's dtype, gates and the decay
    matrix in float32 (float64 for float64 inputs). Differentiable; the stabilizer
    is detached (SPEC §2)."""
    dt = q.dtype
    sd = _gate_dtype(dt)
    B, NH, S, DQK = q.shape
    c0, n0, m0 = _default_state(q, v, c_initial, n_initial, m_initial, sd)
    scale = 1.0 / math.sqrt(DQK)

    lf = F.logsigmoid(f.to(sd))                            # (B, NH, S)
    Fc = torch.cumsum(lf, dim=-1)                          # F_t
    ig = i.to(sd)
    log_d = Fc[..., :, None] - Fc[..., None, :] + ig[..., None, :]    # (B, NH, S, S)
    causal = torch.ones(S, S, dtype=torch.bool, device=q.device).tril()
    log_d = log_d.masked_fill(~causal, float("-inf"))
    log_d0 = Fc + m0                                       # initial-state column
    m = torch.maximum(log_d.max(dim=-1).values, log_d0).detach()      # (B, NH, S)

    qs = q * scale
    d = torch.exp(log_d - m[..., None])
    w0 = torch.exp(log_d0 - m)
    scores = (qs @ k.transpose(-1, -2)) * d.to(dt)         # c_tj
    num = scores @ v + (w0[..., None] * (qs.to(sd) @ c0)).to(dt)
    b = scores.to(sd).sum(-1) + w0 * (qs.to(sd) * n0[:, :, None, :]).sum(-1)
    den = torch.maximum(b.abs(), torch.exp(-m)) + eps
    h = (num.to(sd) / den[..., None]).to(dt)
    if not return_last_states:
        return h
    # Final state: the last row of the decay matrix applied to k v^T.
    g = torch.exp(log_d[..., -1, :] - m[..., -1:])         # (B, NH, S)
    g0 = torch.exp(log_d0[..., -1] - m[..., -1])           # (B, NH)
    kg = (k.to(sd) * g[..., None])
    c_last = kg.transpose(-1, -2) @ v.to(sd) + g0[..., None, None] * c0
    n_last = kg.sum(-2) + g0[..., None] * n0
    return h, (c_last, n_last, m[..., -1:])
