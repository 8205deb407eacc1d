"""SPEC §4: every bad input raises a Python exception (ValueError / TypeError /
RuntimeError) naming the offending argument, before any work is done."""
import re

import pytest
import torch

import xlstm_cuda
from conftest import make_inputs, requires_cuda
from xlstm_cuda import mlstm

ERRORS = (ValueError, TypeError, RuntimeError)


def names(arg):
    """Regex: ``arg`` as a standalone token (`q`, 'q', q: ... but not inside a word)."""
    return rf"(?<![\w]){re.escape(arg)}(?![\w])"


def good(**overrides):
    x = make_inputs(B=2, NH=2, S=9, DQK=8, DV=4, dtype=torch.float32, with_state=True, seed=1)
    x.update(overrides)
    return x


def test_good_inputs_run():
    """The baseline every case below perturbs is itself valid."""
    h = mlstm(**good())
    assert h.shape == (2, 2, 9, 4) and torch.isfinite(h).all()


# --- wrong rank -------------------------------------------------------------------------

@pytest.mark.parametrize("arg", ["q", "k", "v", "i", "f"])
@pytest.mark.parametrize("change", ["extra_dim", "missing_dim"])
def test_wrong_rank(arg, change):
    x = good()
    t = x[arg]
    x[arg] = t.unsqueeze(0) if change == "extra_dim" else t[0]
    with pytest.raises(ERRORS, match=names(arg)) as info:
        mlstm(**x)
    assert str(list(x[arg].shape)) in str(info.value), "message should give the shape it got"


# --- mismatched sizes ---------------------------------------------------------------------

def _resize(t, dim, new):
    shape = list(t.shape)
    shape[dim] = new
    return torch.randn(shape, dtype=t.dtype)


@pytest.mark.parametrize("arg,dim,what", [
    ("k", 0, "B"), ("k", 1, "NH"), ("k", 2, "S"), ("k", 3, "DQK"),
    ("v", 0, "B"), ("v", 1, "NH"), ("v", 2, "S"),
    ("i", 0, "B"), ("i", 1, "NH"), ("i", 2, "S"),
    ("f", 0, "B"), ("f", 1, "NH"), ("f", 2, "S"),
])
def test_mismatched_sizes(arg, dim, what):
    x = good()
    x[arg] = _resize(x[arg], dim, x[arg].shape[dim] + 1)
    with pytest.raises(ERRORS, match=names(arg)) as info:
        mlstm(**x)
    assert str(list(x[arg].shape)) in str(info.value)


@pytest.mark.parametrize("arg,shape", [
    ("c_initial", (2, 2, 8, 5)),      # DV off by one
    ("c_initial", (2, 2, 4, 8)),      # DQK/DV swapped
    ("c_initial", (2, 2, 8)),         # wrong rank
    ("n_initial", (2, 2, 4)),         # DV instead of DQK
    ("n_initial", (2, 2, 8, 1)),
    ("m_initial", (2, 2)),            # missing trailing 1
    ("m_initial", (2, 2, 2)),
    ("m_initial", (1, 2, 1)),         # B mismatch
])
def test_bad_state_shapes(arg, shape):
    x = good(**{arg: torch.zeros(shape)})
    with pytest.raises(ERRORS, match=names(arg)):
        mlstm(**x)


# --- dtypes -------------------------------------------------------------------------------

@pytest.mark.parametrize("q_dtype,arg,dtype", [
    (torch.float32, "k", torch.float16), (torch.float32, "v", torch.bfloat16),
    (torch.float32, "k", torch.float64), (torch.bfloat16, "v", torch.float32),
    (torch.float16, "k", torch.bfloat16),
])
def test_mismatched_qkv_dtypes(q_dtype, arg, dtype):
    x = good()
    for key in "qkv":
        x[key] = x[key].to(q_dtype)
    x[arg] = x[arg].to(dtype)
    with pytest.raises(ERRORS, match=names(arg)):
        mlstm(**x)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64])
def test_non_float_qkv(dtype):
    x = good()
    for key in "qkv":
        x[key] = x[key].to(dtype)
    with pytest.raises(ERRORS, match=names("q")):
        mlstm(**x)


@pytest.mark.parametrize("arg", ["i", "f"])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_integer_gates(arg, dtype):
    x = good()
    x[arg] = x[arg].to(dtype)
    with pytest.raises(ERRORS, match=names(arg)):
        mlstm(**x)


@pytest.mark.parametrize("arg,dtype", [
    ("c_initial", torch.float16), ("c_initial", torch.bfloat16), ("n_initial", torch.float16),
    ("m_initial", torch.bfloat16), ("c_initial", torch.float64), ("n_initial", torch.int32),
])
def test_bad_state_dtypes(arg, dtype):
    """States are float32 (float64 only alongside float64 inputs)."""
    x = good()
    x[arg] = x[arg].to(dtype)
    with pytest.raises(ERRORS, match=names(arg)):
        mlstm(**x)


# --- devices -------------------------------------------------------------------------------

@requires_cuda
@pytest.mark.parametrize("arg", ["k", "v", "i", "f", "c_initial", "n_initial", "m_initial"])
def test_cpu_cuda_mix(arg):
    x = good()
    x[arg] = x[arg].cuda()
    with pytest.raises(ERRORS, match=names(arg)):
        mlstm(**x)
    torch.cuda.synchronize()  # the process (and the CUDA context) is still healthy


@requires_cuda
def test_cuda_q_cpu_rest():
    x = good()
    x["q"] = x["q"].cuda()
    with pytest.raises(ERRORS, match="device"):
        mlstm(**x)
    torch.cuda.synchronize()


# --- scalar arguments ----------------------------------------------------------------------

@pytest.mark.parametrize("eps", [-1e-6, -1.0, float("nan"), float("-inf"), float("inf")])
def test_bad_eps_value(eps):
    with pytest.raises(ERRORS, match=names("eps")):
        mlstm(**good(), eps=eps)


@pytest.mark.parametrize("eps", ["1e-6", None, torch.tensor(1e-6)])
def test_bad_eps_type(eps):
    with pytest.raises(ERRORS, match=names("eps")):
        mlstm(**good(), eps=eps)


@pytest.mark.parametrize("algorithm", ["recurrent_typo", "", "CHUNKWISE", "parallel "])
def test_bad_algorithm(algorithm):
    assert algorithm not in xlstm_cuda.ALGORITHMS
    with pytest.raises(ERRORS, match=names("algorithm")) as info:
        mlstm(**good(), algorithm=algorithm)
    msg = str(info.value)
    for valid in xlstm_cuda.ALGORITHMS:
        assert valid in msg, f"the message should list the valid value {valid!r}: {msg}"
    assert repr(algorithm) in msg or algorithm in msg


@pytest.mark.parametrize("backend", ["sm100", "cuda", "", "SM90"])
def test_bad_backend(backend):
    with pytest.raises(ERRORS, match=names("backend")) as info:
        mlstm(**good(), backend=backend)
    for valid in ("sm90", "sm80", "sm75"):
        assert valid in str(info.value)


def test_bad_backend_env_var(monkeypatch):
    monkeypatch.setenv("XLSTM_CUDA_BACKEND", "sm42")
    with pytest.raises(ERRORS, match="XLSTM_CUDA_BACKEND") as info:
        mlstm(**good())
    assert "sm42" in str(info.value)
    with pytest.raises(ERRORS, match="XLSTM_CUDA_BACKEND"):
        xlstm_cuda.selected_kernel(good()["q"], good()["v"])


def test_backend_env_var_auto_and_empty_are_fine(monkeypatch):
    x = good()
    h = mlstm(**x)
    for value in ("auto", ""):
        monkeypatch.setenv("XLSTM_CUDA_BACKEND", value)
        assert torch.equal(mlstm(**x), h)


@pytest.mark.parametrize("backend", ["sm90", "sm80", "sm75"])
def test_forcing_cuda_family_on_cpu_tensors(backend):
    with pytest.raises(ERRORS, match=names("backend")) as info:
        mlstm(**good(), backend=backend)
    assert "cpu" in str(info.value).lower()
    with pytest.raises(ERRORS, match=names("backend")):
        xlstm_cuda.selected_kernel(good()["q"], good()["v"], backend=backend)


@pytest.mark.parametrize("backend", ["sm90", "sm80", "sm75"])
def test_forcing_cuda_family_via_env_on_cpu_tensors(monkeypatch, backend):
    monkeypatch.setenv("XLSTM_CUDA_BACKEND", backend)
    with pytest.raises(ERRORS, match=backend):
        mlstm(**good())


@pytest.mark.parametrize("chunk_size", [0, -1, -64, 2.5, "16", True, 16.0])
def test_bad_chunk_size(chunk_size):
    with pytest.raises(ERRORS, match=names("chunk_size")):
        mlstm(**good(), chunk_size=chunk_size)


def test_bad_chunk_size_at_op_level():
    x = good()
    args = (x["q"], x["k"], x["v"], x["i"], x["f"], None, None, None, 1e-6, False)
    with pytest.raises(ERRORS, match=names("chunk_size")):
        torch.ops.xlstm.mlstm_forward(*args, "auto", -3, "auto")
    with pytest.raises(ERRORS, match=names("algorithm")):
        torch.ops.xlstm.mlstm_forward(*args, "parallel_typo", 0, "auto")
    with pytest.raises(ERRORS, match=names("backend")):
        torch.ops.xlstm.mlstm_forward(*args, "auto", 0, "sm99")
    with pytest.raises(ERRORS, match=names("eps")):
        torch.ops.xlstm.mlstm_forward(*args[:8], -1.0, False, "auto", 0, "auto")


# --- degenerate sizes ----------------------------------------------------------------------

def test_empty_sequence():
    x = make_inputs(B=1, NH=2, S=1, DQK=8, DV=4, seed=2)
    x = {k: (t[:, :, :0] if k in "qkvif" else t) for k, t in x.items()}
    with pytest.raises(ERRORS, match=r"(?<![\w])S(?![\w])|sequence"):
        mlstm(**x)


@pytest.mark.parametrize("arg", ["q", "v"])
def test_zero_head_dim(arg):
    x = make_inputs(B=1, NH=2, S=4, DQK=8, DV=4, seed=3)
    if arg == "q":
        x["q"], x["k"] = x["q"][..., :0], x["k"][..., :0]
    else:
        x["v"] = x["v"][..., :0]
    with pytest.raises(ERRORS, match="DQK" if arg == "q" else "DV"):
        mlstm(**x)


def test_last_dim_not_unit_stride_is_correct_or_rejected():
    """SPEC §3 only promises stride-1 last dims; other layouts must be either computed
    correctly or rejected with an error naming the tensor - never silently wrong."""
    x = good()
    wide = torch.randn(2, 2, 9, 16)
    wide[..., ::2] = x["q"]
    x_strided = dict(x, q=wide[..., ::2])
    assert x_strided["q"].stride(-1) == 2
    try:
        h = mlstm(**x_strided)
    except ERRORS as exc:
        assert re.search(names("q"), str(exc))
    else:
        torch.testing.assert_close(h, mlstm(**x), rtol=1e-6, atol=1e-6)


# --- the backward op's own checks ----------------------------------------------------------

def _backward_args(x, **overrides):
    fwd = torch.ops.xlstm.mlstm_forward(x["q"], x["k"], x["v"], x["i"], x["f"], x["c_initial"],
                                        x["n_initial"], x["m_initial"], 1e-6, True, "auto", 0,
                                        "auto")
    h, m_rows, norm_rows = fwd[:3]
    a = dict(dh=torch.randn_like(h), dc_last=torch.randn_like(fwd[3]),
             dn_last=torch.randn_like(fwd[4]), q=x["q"], k=x["k"], v=x["v"], i=x["i"],
             f=x["f"], c_initial=x["c_initial"], n_initial=x["n_initial"],
             m_initial=x["m_initial"], h=h, m_rows=m_rows, norm_rows=norm_rows, eps=1e-6,
             algorithm="auto", chunk_size=0, backend="auto")
    a.update(overrides)
    return list(a.values())


def test_backward_op_accepts_its_own_forward():
    out = torch.ops.xlstm.mlstm_backward(*_backward_args(good()))
    assert all(torch.isfinite(t).all() for t in out)


@pytest.mark.parametrize("arg,shape", [("dh", (2, 2, 9, 5)), ("dh", (2, 2, 8, 4)),
                                       ("h", (2, 2, 9, 3)), ("m_rows", (2, 2, 8)),
                                       ("norm_rows", (2, 9)), ("dc_last", (2, 2, 4, 8)),
                                       ("dn_last", (2, 2, 4))])
def test_backward_op_bad_shapes(arg, shape):
    args = _backward_args(good(), **{arg: torch.randn(shape)})
    with pytest.raises(ERRORS, match=names(arg)):
        torch.ops.xlstm.mlstm_backward(*args)


def test_backward_op_integer_dh():
    args = _backward_args(good(), dh=torch.zeros(2, 2, 9, 4, dtype=torch.int32))
    with pytest.raises(ERRORS, match=names("dh")):
        torch.ops.xlstm.mlstm_backward(*args)
