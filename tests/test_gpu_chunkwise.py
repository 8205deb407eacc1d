"""GPU chunkwise algorithm (csrc/cuda/chunkwise_host.cpp): the family kernels run per
chunk after a scan over chunks. Forward outputs, final states and every gradient
against the float64 reference under the SPEC §5 rule on NaN-poisoned memory, for
chunk lengths that do and do not divide S; agreement with the quadratic (parallel)
kernels; dispatch names. Skipped, with the reason shown, on machines without a GPU."""
import pytest
import torch

import xlstm_cuda
from conftest import (KERNEL_FAMILY_PARAMS, assert_close_to_reference, assert_outputs_close,
                      make_inputs, poison_cuda_allocator, reference_pair, requires_cuda,
                      seed_for)
from test_gpu_backward import _check_against_reference, _cotangents
from xlstm_cuda import mlstm

pytestmark = requires_cuda

HALF_DTYPES = [torch.bfloat16, torch.float16]
HALF_IDS = ["bf16", "fp16"]
BACKEND_PARAMS = KERNEL_FAMILY_PARAMS + [pytest.param("auto", id="auto")]
HEAD_DIMS = [(64, 64), (128, 256), (256, 512), (256, 64), (64, 128)]


def _inputs(S, DQK, DV, dtype, with_state, seed, B=2, NH=2, gates="typical"):
    return make_inputs(B=B, NH=NH, S=S, DQK=DQK, DV=DV, dtype=dtype, device="cuda",
                       with_state=with_state, seed=seed, gates=gates)


def _skip_sm75_bf16(backend, dtype):
    if backend == "sm75" and dtype == torch.bfloat16:
        pytest.skip("the sm75 family has no bfloat16 kernel (Turing: no bf16 MMA)")


def _require_chunked(x, backend, chunked_backward=True):
    name = xlstm_cuda.selected_kernel(x["q"], x["v"], "chunkwise", backend)
    assert name.endswith("_parallel_chunkwise"), f"expected a chunked kernel, got {name}"
    if chunked_backward:
        name = xlstm_cuda.selected_backward_kernel(x["q"], x["v"], "chunkwise", backend)
        assert name.endswith("_backward_chunkwise"), f"expected a chunked backward, got {name}"


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("DQK,DV", HEAD_DIMS)
@pytest.mark.parametrize("S,chunk", [(1, None), (17, 8), (127, 64), (300, 128), (1000, None)])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_chunkwise_forward_parity(backend, dtype, DQK, DV, S, chunk, with_state):
    _skip_sm75_bf16(backend, dtype)
    x = _inputs(S, DQK, DV, dtype, with_state,
                seed_for("gpu_chunk_fwd", backend, str(dtype), DQK, DV, S, with_state))
    _require_chunked(x, backend, chunked_backward=False)
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    poison_cuda_allocator()
    out = mlstm(**x, return_last_states=True, algorithm="chunkwise", chunk_size=chunk,
                backend=backend)
    torch.cuda.synchronize()
    assert out[0].dtype == dtype
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("DQK,DV", [(64, 64), (128, 256)])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_chunkwise_forward_long_sequence(dtype, DQK, DV, with_state):
    x = _inputs(4097, DQK, DV, dtype, with_state,
                seed_for("gpu_chunk_fwd_long", str(dtype), DQK, with_state), B=1)
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    poison_cuda_allocator()
    out = mlstm(**x, return_last_states=True, algorithm="chunkwise")
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)


@pytest.mark.parametrize("backend", [p for p in KERNEL_FAMILY_PARAMS
                                     if p.values[0] in ("sm80", "sm75")] +
                         [pytest.param("auto", id="auto")])
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("DQK,DV", HEAD_DIMS)
@pytest.mark.parametrize("S,chunk", [(1, None), (17, 8), (127, 64), (300, 128), (1000, None)])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_chunkwise_backward_parity(backend, dtype, DQK, DV, S, chunk, with_state):
    _skip_sm75_bf16(backend, dtype)
    seed = seed_for("gpu_chunk_bwd", backend, str(dtype), DQK, DV, S, with_state)
    x = _inputs(S, DQK, DV, dtype, with_state, seed)
    if backend == "sm75" and DQK + DV > 320:
        pytest.skip("sm75 backward tiles need DQK + DV <= 320 (Turing shared memory)")
    _require_chunked(x, backend)
    gh, gc, gn = _cotangents(x, seed + 1, final_state_grads=with_state)
    _check_against_reference(x, gh, gc, gn, algorithm="chunkwise", chunk_size=chunk,
                             backend=backend)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("DQK,DV", [(64, 64), (128, 256)])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_chunkwise_backward_long_sequence(dtype, DQK, DV, with_state):
    seed = seed_for("gpu_chunk_bwd_long", str(dtype), DQK, DV, with_state)
    x = _inputs(4097, DQK, DV, dtype, with_state, seed, B=1)
    gh, gc, gn = _cotangents(x, seed + 1, final_state_grads=with_state)
    _check_against_reference(x, gh, gc, gn, algorithm="chunkwise")


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("gates", ["extreme", "floor"])
def test_chunkwise_gate_regimes(dtype, gates):
    seed = seed_for("gpu_chunk_gates", str(dtype), gates)
    x = _inputs(300, 64, 64, dtype, True, seed, gates=gates)
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    out = mlstm(**x, return_last_states=True, algorithm="chunkwise", chunk_size=64)
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)
    gh, gc, gn = _cotangents(x, seed + 1, final_state_grads=True)
    _check_against_reference(x, gh, gc, gn, algorithm="chunkwise", chunk_size=64)


def test_chunkwise_strided_inputs():
    """(B, S, NH, D)-layout views: the chunk views are built from strides, not copies
    where the layout allows; the result equals the contiguous one."""
    x = _inputs(300, 64, 64, torch.bfloat16, True, seed=11)
    strided = dict(x)
    for key in "qkvif":
        strided[key] = x[key].transpose(1, 2).contiguous().transpose(1, 2)
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    out = mlstm(**strided, return_last_states=True, algorithm="chunkwise", chunk_size=64)
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
def test_chunkwise_matches_parallel_kernels(dtype):
    """Both algorithms compute the same function: h agrees to low-precision rounding, the
    gradients too (the per-row statistics of either forward serve either backward)."""
    x = _inputs(1000, 128, 128, dtype, True, seed=seed_for("chunk_vs_par", str(dtype)))
    h_par = mlstm(**x, algorithm="parallel")
    h_chunk = mlstm(**x, algorithm="chunkwise")
    ref64, ref_lowp = reference_pair(x)
    assert_close_to_reference(h_chunk, ref64, ref_lowp, "h chunkwise")
    assert_close_to_reference(h_par, ref64, ref_lowp, "h parallel")
    tol = 8 * (ref_lowp.double() - ref64).abs().max().item()
    assert (h_par.double() - h_chunk.double()).abs().max().item() <= tol


def test_auto_picks_chunkwise_for_long_sequences():
    """Forward chunkwise from 3072 steps, backward from 2560 (csrc/mlstm_dispatch.h)."""
    def names(S):
        x = _inputs(S, 64, 64, torch.bfloat16, False, seed=1, B=1, NH=1)
        return (xlstm_cuda.selected_kernel(x["q"], x["v"]),
                xlstm_cuda.selected_backward_kernel(x["q"], x["v"]))
    fwd, bwd = names(2559)
    assert fwd.endswith("_parallel") and bwd.endswith("_backward"), (fwd, bwd)
    fwd, bwd = names(2560)
    assert fwd.endswith("_parallel") and bwd.endswith("_backward_chunkwise"), (fwd, bwd)
    fwd, bwd = names(3071)
    assert fwd.endswith("_parallel") and bwd.endswith("_backward_chunkwise"), (fwd, bwd)
    fwd, bwd = names(3072)
    assert fwd.endswith("_parallel_chunkwise") and bwd.endswith("_backward_chunkwise"), (fwd, bwd)
    x = _inputs(8192, 64, 64, torch.bfloat16, False, seed=1, B=1, NH=1)
    assert xlstm_cuda.selected_kernel(x["q"], x["v"], "chunkwise", "aten") == "aten_chunkwise"


def test_parallel_forward_with_chunkwise_backward():
    """"auto" at 2560 <= S < 3072 pairs the parallel forward with the chunkwise backward:
    the gradients meet the accuracy rule."""
    seed = seed_for("gpu_par_fwd_chunk_bwd")
    x = _inputs(2900, 64, 64, torch.bfloat16, True, seed, B=1, NH=1)
    assert xlstm_cuda.selected_kernel(x["q"], x["v"]).endswith("_parallel")
    gh, gc, gn = _cotangents(x, seed + 1, final_state_grads=True)
    _check_against_reference(x, gh, gc, gn)
