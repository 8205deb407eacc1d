"""The public mLSTM function (the API of mlstm_kernels, with exact semantics)."""
from __future__ import annotations

import os
from typing import Optional

import torch

ALGORITHMS = ("auto", "chunkwise", "parallel")
BACKENDS = ("auto", "sm90", "sm80", "sm75", "aten")
BACKEND_ENV = "XLSTM_CUDA_BACKEND"


def _resolve_backend(backend: str) -> str:
    if backend == "auto":
        backend = os.environ.get(BACKEND_ENV, "auto") or "auto"
        source = f"the environment variable {BACKEND_ENV}"
    else:
        source = "`backend`"
    if backend not in BACKENDS:
        raise ValueError(f"mlstm: {source} must be one of {BACKENDS}, got {backend!r}")
    return backend


def _check_choice(algorithm: str, chunk_size: Optional[int]) -> int:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"mlstm: `algorithm` must be one of {ALGORITHMS}, got {algorithm!r}")
    if chunk_size is None:
        return 0
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"mlstm: `chunk_size` must be a positive int or None, got {chunk_size!r}")
    return chunk_size


def mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    c_initial: Optional[torch.Tensor] = None,
    n_initial: Optional[torch.Tensor] = None,
    m_initial: Optional[torch.Tensor] = None,
    return_last_states: bool = False,
    eps: float = 1e-6,
    algorithm: str = "auto",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
):
    """mLSTM cell over a whole sequence (see docs/semantics.md).

    Args:
        q, k: (B, NH, S, DQK); v: (B, NH, S, DV); fp16, bf16, fp32 (or fp64 on the
            ATen path), all the same dtype.
        i, f: (B, NH, S) input / forget gate pre-activations (any float dtype).
        c_initial, n_initial, m_initial: optional initial state, fp32, shapes
            (B, NH, DQK, DV), (B, NH, DQK), (B, NH, 1); each defaults to zeros.
        return_last_states: also return the final state (c, n, m).
        eps: added to the normalizer's denominator, >= 0.
        algorithm: "parallel" (the quadratic tiled form), "chunkwise" (the same
            kernels per chunk after a scan over chunks: O(S·L) work, for long S) or
            "auto" (forward: parallel up to 3071 steps, chunkwise from
            3072; backward: chunkwise from 2560).
        chunk_size: chunk length of the chunkwise algorithm (None: 512 for the CUDA
            kernels, 64 for the ATen path).
        backend: "auto" (by compute capability; the XLSTM_CUDA_BACKEND environment
            variable sets the default), a CUDA kernel family to force, or "aten"
            for the portable ATen implementation.

    Returns:
        h (B, NH, S, DV) in q's dtype, or (h, (c, n, m)) with return_last_states.
        Differentiable in q, k, v, i, f, c_initial, n_initial, also through the
        returned final state.
    """
    chunk = _check_choice(algorithm, chunk_size)
    backend = _resolve_backend(backend)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool):
        raise TypeError(f"mlstm: `eps` must be a float, got {type(eps).__name__}")
    h, _, _, c, n, m = torch.ops.xlstm.mlstm_forward(
        q, k, v, i, f, c_initial, n_initial, m_initial, float(eps),
        bool(return_last_states), algorithm, chunk, backend,
    )
    if return_last_states:
        return h, (c, n, m)
    return h


def selected_kernel(q: torch.Tensor, v: torch.Tensor, algorithm: str = "auto",
                    backend: str = "auto") -> str:
    """Name of the implementation `mlstm` runs for inputs like (q, v), e.g.
    'sm90:sm80_parallel' or 'aten_chunkwise'."""
    _check_choice(algorithm, None)
    return torch.ops.xlstm.selected_kernel(q, v, algorithm, _resolve_backend(backend))


def selected_backward_kernel(q: torch.Tensor, v: torch.Tensor, algorithm: str = "auto",
                             backend: str = "auto") -> str:
    """Name of the implementation the backward of such a call runs, e.g.
    'sm90:sm90_backward' or 'aten_chunkwise'. The kernels write every gradient element
    from one thread block without atomic accumulation, so both are bitwise
    reproducible."""
    _check_choice(algorithm, None)
    return torch.ops.xlstm.selected_backward_kernel(q, v, algorithm, _resolve_backend(backend))
