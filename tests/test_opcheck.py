"""torch.library.opcheck of torch.ops.xlstm.* (schema, fake/meta kernels, autograd
registration, AOT dispatch) and torch.compile of xlstm_cuda.mlstm."""
import pytest
import torch

import xlstm_cuda  # noqa: F401  (registers torch.ops.xlstm.*)
from conftest import make_inputs, rel_err
from xlstm_cuda import mlstm

FWD = torch.ops.xlstm.mlstm_forward.default
BWD = torch.ops.xlstm.mlstm_backward.default


def _forward_args(x, eps=1e-6, return_last_states=False, chunk_size=0, requires_grad=True):
    t = {k: (v.clone().requires_grad_(requires_grad and k in "qkvif") if v is not None else None)
         for k, v in x.items()}
    return (t["q"], t["k"], t["v"], t["i"], t["f"], t["c_initial"], t["n_initial"],
            t["m_initial"], eps, return_last_states, "auto", chunk_size, "auto")


# S=37 fits in one chunk; S=70 with the default chunk (64) and S=37 with chunk 16 need a
# padded tail chunk.
SHAPES = [(37, 0), (70, 0), (37, 16)]


@pytest.mark.parametrize("S,chunk_size", SHAPES, ids=["one_chunk", "tail_default", "tail_16"])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
@pytest.mark.parametrize("return_last_states", [False, True], ids=["h", "h+states"])
def test_opcheck_forward(S, chunk_size, with_state, return_last_states):
    x = make_inputs(B=2, NH=2, S=S, DQK=8, DV=16, dtype=torch.float32, with_state=with_state,
                    seed=S)
    args = _forward_args(x, return_last_states=return_last_states, chunk_size=chunk_size)
    torch.library.opcheck(FWD, args)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64],
                         ids=["bf16", "fp16", "fp64"])
def test_opcheck_forward_other_dtypes(dtype):
    x = make_inputs(B=1, NH=2, S=37, DQK=8, DV=16, dtype=dtype, with_state=True, seed=2)
    torch.library.opcheck(FWD, _forward_args(x, return_last_states=True))


def test_opcheck_forward_strided_inputs():
    x = make_inputs(B=2, NH=2, S=20, DQK=8, DV=16, dtype=torch.float32, seed=3)
    for key in "qkvif":
        x[key] = x[key].transpose(1, 2).contiguous().transpose(1, 2)
    torch.library.opcheck(FWD, _forward_args(x, return_last_states=True))


@pytest.mark.parametrize("S,chunk_size", SHAPES, ids=["one_chunk", "tail_default", "tail_16"])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
@pytest.mark.parametrize("final_grads", [False, True], ids=["dh", "dh+dstate"])
def test_opcheck_backward(S, chunk_size, with_state, final_grads):
    B, NH, DQK, DV = 2, 2, 8, 16
    x = make_inputs(B=B, NH=NH, S=S, DQK=DQK, DV=DV, dtype=torch.float32,
                    with_state=with_state, seed=S + 1)
    fargs = _forward_args(x, return_last_states=final_grads, chunk_size=chunk_size,
                          requires_grad=False)
    h, m_rows, norm_rows, *_ = FWD(*fargs)
    gen = torch.Generator().manual_seed(S)
    dh = torch.randn(B, NH, S, DV, generator=gen)
    dc = torch.randn(B, NH, DQK, DV, generator=gen) if final_grads else None
    dn = torch.randn(B, NH, DQK, generator=gen) if final_grads else None
    q, k, v, i, f, c0, n0, m0, eps = fargs[:9]
    args = (dh, dc, dn, q, k, v, i, f, c0, n0, m0, h, m_rows, norm_rows, eps, "auto",
            chunk_size, "auto")
    torch.library.opcheck(BWD, args)


def test_forward_outputs_match_fake_metadata():
    """The fake (meta) kernel's shapes, dtypes and strides are what the real kernel returns
    (torch.compile relies on it), including a padded tail chunk."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    x = make_inputs(B=2, NH=2, S=70, DQK=8, DV=16, dtype=torch.float32, with_state=True,
                    seed=4)
    args = _forward_args(x, return_last_states=True, requires_grad=False)
    real = FWD(*args)
    with FakeTensorMode() as mode:
        fake_args = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a
                          for a in args)
        fake = FWD(*fake_args)
    names = ["h", "m_rows", "norm_rows", "c_last", "n_last", "m_last"]
    for name, r, fk in zip(names, real, fake):
        assert r.shape == fk.shape and r.dtype == fk.dtype, name
        assert r.stride() == fk.stride(), f"{name}: real strides {r.stride()} != fake {fk.stride()}"


def _compile_inputs(with_state, seed):
    return make_inputs(B=1, NH=2, S=40, DQK=8, DV=16, dtype=torch.float32,
                       with_state=with_state, seed=seed)


@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_torch_compile_fullgraph(with_state):
    """torch.compile(fullgraph=True) traces the op (no graph break), matches eager in the
    forward, and differentiates through it."""
    torch._dynamo.reset()
    compiled = torch.compile(mlstm, fullgraph=True, backend="aot_eager")
    x = _compile_inputs(with_state, seed=5)
    leaves_c = {k: (v.clone().requires_grad_(k in "qkvif") if v is not None else None)
                for k, v in x.items()}
    leaves_e = {k: (v.clone().requires_grad_(k in "qkvif") if v is not None else None)
                for k, v in x.items()}
    h_c, (c_c, n_c, m_c) = compiled(**leaves_c, return_last_states=True)
    h_e, (c_e, n_e, m_e) = mlstm(**leaves_e, return_last_states=True)
    for a, b in [(h_c, h_e), (c_c, c_e), (n_c, n_e), (m_c, m_e)]:
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    gen = torch.Generator().manual_seed(6)
    gh = torch.randn(h_e.shape, generator=gen)
    gc = torch.randn(c_e.shape, generator=gen)
    gs_c = torch.autograd.grad((h_c * gh).sum() + (c_c * gc).sum(),
                               [leaves_c[k] for k in "qkvif"])
    gs_e = torch.autograd.grad((h_e * gh).sum() + (c_e * gc).sum(),
                               [leaves_e[k] for k in "qkvif"])
    for name, a, b in zip("qkvif", gs_c, gs_e):
        assert torch.isfinite(a).all(), f"d{name}"
        assert rel_err(a, b) <= 1e-5, f"d{name}: compiled vs eager"


def test_torch_compile_inductor():
    """The default (inductor) backend around the op: one small case (needs a C++ compiler
    for the surrounding elementwise code)."""
    torch._dynamo.reset()

    def block(q, k, v, i, f):
        return mlstm(q * 2.0, k, v, i, f + 1.0).relu().sum(-1)

    compiled = torch.compile(block, fullgraph=True)
    x = _compile_inputs(False, seed=7)
    args = [x[k].clone().requires_grad_(True) for k in "qkvif"]
    args_e = [x[k].clone().requires_grad_(True) for k in "qkvif"]
    out_c, out_e = compiled(*args), block(*args_e)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    out_c.sum().backward()
    out_e.sum().backward()
    for name, a, b in zip("qkvif", args, args_e):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5, msg=f"d{name}")


def test_torch_compile_respects_backend_env(monkeypatch):
    """The XLSTM_CUDA_BACKEND environment variable is read at call time, also when
    compiled: a bad value raises instead of being baked in silently."""
    torch._dynamo.reset()
    compiled = torch.compile(mlstm, fullgraph=True, backend="aot_eager")
    x = _compile_inputs(False, seed=8)
    monkeypatch.setenv("XLSTM_CUDA_BACKEND", "not-a-backend")
    with pytest.raises(Exception, match="XLSTM_CUDA_BACKEND"):
        compiled(**x)
