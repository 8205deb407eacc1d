"""Fake (meta) and autograd registrations for torch.ops.xlstm.*.

The fake kernels let torch.compile / FakeTensor trace the ops; the autograd
formula routes the gradient of mlstm_forward through mlstm_backward.
"""
from __future__ import annotations

import torch


def _state_dtype(q: torch.Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


@torch.library.register_fake("xlstm::mlstm_forward")
def _mlstm_forward_fake(q, k, v, i, f, c_initial, n_initial, m_initial, eps,
                        return_last_states, algorithm, chunk_size, backend):
    B, NH, S, DQK = q.shape
    DV = v.shape[-1]
    sd = _state_dtype(q)
    h = q.new_empty((B, NH, S, DV))
    m_rows = q.new_empty((B, NH, S), dtype=sd)
    norm_rows = q.new_empty((B, NH, S), dtype=sd)
    if return_last_states:
        last = (q.new_empty((B, NH, DQK, DV), dtype=sd), q.new_empty((B, NH, DQK), dtype=sd),
                q.new_empty((B, NH, 1), dtype=sd))
    else:
        last = tuple(q.new_empty((0,), dtype=sd) for _ in range(3))
    return (h, m_rows, norm_rows) + last


@torch.library.register_fake("xlstm::mlstm_backward")
def _mlstm_backward_fake(dh, dc_last, dn_last, q, k, v, i, f, c_initial, n_initial, m_initial,
                         h, m_rows, norm_rows, eps, algorithm, chunk_size, backend):
    sd = _state_dtype(q)
    dc0 = torch.empty_like(c_initial) if c_initial is not None else q.new_empty((0,), dtype=sd)
    dn0 = torch.empty_like(n_initial) if n_initial is not None else q.new_empty((0,), dtype=sd)
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
            torch.empty_like(i), torch.empty_like(f), dc0, dn0)


def _setup_context(ctx, inputs, output):
    (q, k, v, i, f, c_initial, n_initial, m_initial, eps,
     return_last_states, algorithm, chunk_size, backend) = inputs
    h, m_rows, norm_rows = output[:3]
    ctx.save_for_backward(q, k, v, i, f, c_initial, n_initial, m_initial, h, m_rows, norm_rows)
    ctx.eps, ctx.return_last_states = eps, return_last_states
    ctx.algorithm, ctx.chunk_size, ctx.backend = algorithm, chunk_size, backend
    ctx.mark_non_differentiable(m_rows, norm_rows, output[5])


def _backward(ctx, dh, _dm_rows, _dnorm_rows, dc_last, dn_last, _dm_last):
    q, k, v, i, f, c_initial, n_initial, m_initial, h, m_rows, norm_rows = ctx.saved_tensors
    if not ctx.return_last_states:
        dc_last = dn_last = None
    dq, dk, dv, di, df, dc0, dn0 = torch.ops.xlstm.mlstm_backward(
        dh, dc_last, dn_last, q, k, v, i, f, c_initial, n_initial, m_initial,
        h, m_rows, norm_rows, ctx.eps, ctx.algorithm, ctx.chunk_size, ctx.backend,
    )
    return (dq, dk, dv, di, df,
            dc0 if c_initial is not None else None,
            dn0 if n_initial is not None else None,
            None, None, None, None, None, None)


torch.library.register_autograd("xlstm::mlstm_forward", _backward, setup_context=_setup_context)
