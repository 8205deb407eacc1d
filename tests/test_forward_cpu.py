"""Forward pass of xlstm_cuda.mlstm on CPU against the float64 reference (SPEC §1, §3-§5)."""
import pytest
import torch

import xlstm_cuda
from conftest import (assert_close_to_reference, assert_outputs_close, make_inputs,
                      reference_pair, rel_err, seed_for)
from xlstm_cuda import mlstm, mlstm_parallel_reference

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DTYPE_IDS = ["fp16", "bf16", "fp32", "fp64"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("S", [1, 2, 17, 63, 130, 257])
@pytest.mark.parametrize("DQK,DV", [(8, 16), (16, 8)])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_forward_matches_reference(dtype, S, DQK, DV, with_state):
    x = make_inputs(B=2, NH=2, S=S, DQK=DQK, DV=DV, dtype=dtype, with_state=with_state,
                    seed=seed_for(S, DQK, DV, with_state, str(dtype)))
    out = mlstm(**x, return_last_states=True)
    h, (c, n, m) = out
    assert h.dtype == dtype and h.shape == (2, 2, S, DV)
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    for t, shape in [(c, (2, 2, DQK, DV)), (n, (2, 2, DQK)), (m, (2, 2, 1))]:
        assert t.dtype == state_dtype and t.shape == shape
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_forward_without_last_states_returns_h_only(dtype):
    x = make_inputs(B=1, NH=2, S=40, DQK=8, DV=16, dtype=dtype, seed=3)
    h = mlstm(**x)
    assert isinstance(h, torch.Tensor)
    ref64, ref_lowp = reference_pair(x)
    assert_close_to_reference(h, ref64, ref_lowp, "h")
    # Identical to the h returned together with the states.
    h2, _ = mlstm(**x, return_last_states=True)
    assert torch.equal(h, h2)


@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.5])
def test_eps_is_honoured(eps):
    x = make_inputs(B=1, NH=2, S=33, DQK=8, DV=8, dtype=torch.float64, seed=11, gates="floor")
    h = mlstm(**x, eps=eps)
    ref = mlstm_parallel_reference(**x, eps=eps)
    assert rel_err(h, ref) <= 1e-10
    if eps == 0.5:  # a large eps visibly changes the answer: the test can tell
        assert rel_err(h, mlstm_parallel_reference(**x, eps=0.0)) > 1e-3


@pytest.mark.parametrize("S", [1, 63, 130])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_chunk_sizes_agree(S, with_state):
    x64 = make_inputs(B=2, NH=1, S=S, DQK=8, DV=16, dtype=torch.float64,
                      with_state=with_state, seed=21 + S)
    x32 = make_inputs(B=2, NH=1, S=S, DQK=8, DV=16, dtype=torch.float32,
                      with_state=with_state, seed=21 + S)
    ref64, ref_lowp = reference_pair(x32, return_last_states=True)
    results = {}
    for cs in (1, 16, 64, None):
        h, (c, n, m) = mlstm(**x64, chunk_size=cs, return_last_states=True)
        results[cs] = (h, c, n, m)
        assert_outputs_close(mlstm(**x32, chunk_size=cs, return_last_states=True),
                             ref64, ref_lowp, with_states=True)
    base = results[None]
    for cs, res in results.items():
        for name, a, b in zip("hcnm", res, base):
            assert rel_err(a, b) <= 1e-11, f"chunk_size={cs} vs default: {name} differs"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_strided_inputs(dtype, with_state):
    """Views transposed from (B, S, NH, D) / (B, S, NH) layouts give the same result as
    contiguous copies (SPEC §3: only the last dim needs stride 1)."""
    B, NH, S, DQK, DV = 2, 2, 70, 8, 16
    x = make_inputs(B=B, NH=NH, S=S, DQK=DQK, DV=DV, dtype=dtype, with_state=with_state, seed=5)
    strided = {}
    for key, t in x.items():
        if key in ("q", "k", "v", "i", "f"):
            t2 = t.transpose(1, 2).contiguous().transpose(1, 2)  # same values, (B,S,NH,..) memory
            assert not t2.is_contiguous() and torch.equal(t2, t)
            strided[key] = t2
        else:
            strided[key] = t
    # State tensors sliced out of wider buffers.
    if with_state:
        c_buf = torch.zeros(B, NH, DQK, DV + 3)
        c_buf[..., :DV] = x["c_initial"]
        strided["c_initial"] = c_buf[..., :DV]
        assert not strided["c_initial"].is_contiguous()
    h_s, (c_s, n_s, m_s) = mlstm(**strided, return_last_states=True)
    h_c, (c_c, n_c, m_c) = mlstm(**x, return_last_states=True)
    for a, b in [(h_s, h_c), (c_s, c_c), (n_s, n_c), (m_s, m_c)]:
        torch.testing.assert_close(a, b, rtol=1e-6 if dtype == torch.float32 else 1e-2,
                                   atol=1e-6 if dtype == torch.float32 else 1e-2)
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    assert_outputs_close((h_s, (c_s, n_s, m_s)), ref64, ref_lowp, with_states=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("S", [2, 100])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_extreme_gates_finite(dtype, S, with_state):
    """SPEC §4: |i|, |f| up to 1e4 give finite outputs (h and the final state)."""
    x = make_inputs(B=2, NH=2, S=S, DQK=8, DV=16, dtype=dtype, with_state=with_state,
                    seed=31 + S, gates="extreme")
    assert x["i"].abs().max() == 1e4 and x["f"].abs().max() == 1e4
    h, (c, n, m) = mlstm(**x, return_last_states=True)
    for name, t in [("h", h), ("c", c), ("n", n), ("m", m)]:
        assert torch.isfinite(t).all(), f"{name} has non-finite values for extreme gates"
    if dtype == torch.float64:  # and they are the right values
        ref = mlstm_parallel_reference(**x, return_last_states=True)
        assert rel_err(h, ref[0]) <= 1e-9
        for name, a, b in zip("cnm", (c, n, m), ref[1]):
            assert rel_err(a, b) <= 1e-9, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_extreme_gates_accuracy(dtype):
    x = make_inputs(B=1, NH=2, S=90, DQK=8, DV=16, dtype=dtype, seed=77, gates="extreme")
    out = mlstm(**x, return_last_states=True)
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)


@pytest.mark.parametrize("name", ["q", "k", "v", "i", "f"])
def test_nan_input_propagates(name):
    """SPEC §4: a NaN input element propagates to the outputs that depend on it, without
    crashing, and leaves the other (batch, head) slices untouched."""
    B, NH, S, t0 = 2, 2, 130, 70
    x = make_inputs(B=B, NH=NH, S=S, DQK=8, DV=16, dtype=torch.float32, seed=41)
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    if name in ("i", "f"):
        x[name][1, 0, t0] = float("nan")
    else:
        x[name][1, 0, t0, 3] = float("nan")
    h, (c, n, m) = mlstm(**x, return_last_states=True)
    bad_h = h[1, 0]
    if name == "q":  # q_t only feeds h_t
        assert not torch.isfinite(bad_h[t0]).any()
        assert torch.isfinite(bad_h[:t0]).all() and torch.isfinite(bad_h[t0 + 1:]).all()
        assert torch.isfinite(c[1, 0]).all() and torch.isfinite(n[1, 0]).all()
    else:  # everything from step t0 on depends on it, including the final state
        assert (~torch.isfinite(bad_h[t0:])).any(-1).all(), "rows >= t0 must show the NaN"
        assert not torch.isfinite(c[1, 0]).all()
        if name in ("i", "f"):
            assert torch.isfinite(bad_h[:t0]).all(), "rows before t0 do not depend on it"
    # The other slices are finite and correct.
    mask = torch.ones(B, NH, dtype=torch.bool)
    mask[1, 0] = False
    assert_close_to_reference(h[mask], ref64[0][mask], ref_lowp[0][mask], "h (clean slices)")
    assert_close_to_reference(c[mask], ref64[1][0][mask], ref_lowp[1][0][mask], "c (clean)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_batch_and_head_independence(dtype, with_state):
    """Each (batch, head) slice of a batched call equals running that slice alone."""
    B, NH, S = 2, 2, 75
    x = make_inputs(B=B, NH=NH, S=S, DQK=8, DV=16, dtype=dtype, with_state=with_state, seed=51)
    h, (c, n, m) = mlstm(**x, return_last_states=True)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for b in range(B):
        for hd in range(NH):
            xs = {k: (t[b:b + 1, hd:hd + 1] if t is not None else None) for k, t in x.items()}
            hs, (cs, ns, ms) = mlstm(**xs, return_last_states=True)
            for name, full, single in [("h", h, hs), ("c", c, cs), ("n", n, ns), ("m", m, ms)]:
                err = rel_err(single, full[b:b + 1, hd:hd + 1])
                assert err <= tol, f"{name}[{b},{hd}] alone vs batched: {err:.2e}"


def test_initial_state_continues_a_sequence():
    """Splitting a sequence in two and feeding the first half's final state to the second
    half reproduces the whole-sequence run (states are interchangeable, SPEC §1)."""
    x = make_inputs(B=2, NH=2, S=90, DQK=8, DV=16, dtype=torch.float64, seed=61)
    h, (c, n, m) = mlstm(**x, return_last_states=True)
    first = {k: (t[:, :, :37] if k in "qkvif" and t is not None else t) for k, t in x.items()}
    second = {k: (t[:, :, 37:] if k in "qkvif" and t is not None else t) for k, t in x.items()}
    h1, (c1, n1, m1) = mlstm(**first, return_last_states=True)
    second.update(c_initial=c1, n_initial=n1, m_initial=m1)
    h2, (c2, n2, m2) = mlstm(**second, return_last_states=True)
    assert rel_err(torch.cat([h1, h2], dim=2), h) <= 1e-10
    for name, a, b in [("c", c2, c), ("n", n2, n), ("m", m2, m)]:
        assert rel_err(a, b) <= 1e-10, name


def test_mixed_gate_dtypes():
    """i, f may be any float dtype (used in fp32): fp16 / bf16 / fp64 gates give the same
    result as the same values in fp32."""
    x = make_inputs(B=1, NH=2, S=40, DQK=8, DV=16, dtype=torch.float32, seed=71)
    x["i"] = x["i"].to(torch.bfloat16).float()  # values representable in every gate dtype
    x["f"] = x["f"].to(torch.bfloat16).float()
    h_ref = mlstm(**x)
    for gdt in (torch.float16, torch.bfloat16, torch.float64):
        xg = dict(x, i=x["i"].to(gdt), f=x["f"].to(gdt))
        torch.testing.assert_close(mlstm(**xg), h_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("algorithm", xlstm_cuda.ALGORITHMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64],
                         ids=["fp32", "bf16", "fp64"])
def test_every_algorithm_matches_reference(algorithm, dtype):
    """SPEC §1: every algorithm computes the same function (on CPU as well)."""
    x = make_inputs(B=2, NH=2, S=100, DQK=8, DV=16, dtype=dtype, with_state=True,
                    seed=seed_for("algo", algorithm, str(dtype)))
    out = mlstm(**x, return_last_states=True, algorithm=algorithm)
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)
    h_default = mlstm(**x)
    torch.testing.assert_close(out[0], h_default, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6,
                               atol=1e-2 if dtype == torch.bfloat16 else 1e-6)
