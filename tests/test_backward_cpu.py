"""Gradients of xlstm_cuda.mlstm on CPU (SPEC §2): against autograd through the float64
parallel reference, the accuracy rule for low precision, and torch.autograd.gradcheck."""
import pytest
import torch

from conftest import (assert_close_to_reference, floor_active_rows, make_inputs, seed_for,
                      to_dtype)
from xlstm_cuda import mlstm, mlstm_parallel_reference

GRAD_INPUTS = ("q", "k", "v", "i", "f", "c_initial", "n_initial")


def _leaves(x, dtype=None):
    """Detached copies of the inputs (cast with ``to_dtype`` when ``dtype`` is given),
    requiring grad for every differentiable input."""
    x = to_dtype(x, dtype) if dtype is not None else {k: (t.detach() if t is not None else None)
                                                      for k, t in x.items()}
    return {k: (t.clone().requires_grad_(k in GRAD_INPUTS) if t is not None else None)
            for k, t in x.items()}


def _cotangents(x, seed, with_final_state_grads, dtype):
    """Random incoming gradients for h (in the input dtype's values) and for the final
    C, n (or None)."""
    gen = torch.Generator().manual_seed(seed)
    B, NH, S, DQK = x["q"].shape
    DV = x["v"].shape[-1]
    gh = torch.randn(B, NH, S, DV, generator=gen, dtype=torch.float64).to(dtype)
    if not with_final_state_grads:
        return gh, None, None
    gc = torch.randn(B, NH, DQK, DV, generator=gen, dtype=torch.float64)
    gn = torch.randn(B, NH, DQK, generator=gen, dtype=torch.float64)
    return gh, gc, gn


def _grads(fn, leaves, gh, gc, gn, eps=1e-6, **kw):
    """Gradients of <h, gh> + <C_S, gc> + <n_S, gn> w.r.t. the differentiable leaves."""
    h, (c, n, _m) = fn(**leaves, eps=eps, return_last_states=True, **kw)
    loss = (h.to(torch.float64) * gh.to(torch.float64)).sum()
    if gc is not None:
        loss = loss + (c.to(torch.float64) * gc).sum() + (n.to(torch.float64) * gn).sum()
    names = [k for k in GRAD_INPUTS if leaves.get(k) is not None]
    gs = torch.autograd.grad(loss, [leaves[k] for k in names])
    return dict(zip(names, gs))


def _assert_grads_match(got, want, rtol=1e-8, what=""):
    """Each gradient within ``rtol`` of its reference, relative to its own size; a
    gradient that is (near) zero in the reference is held to rtol times the size of the
    largest gradient instead (rounding leaves ~1e-19 where the exact value is 0)."""
    assert set(got) == set(want), f"gradients for {sorted(got)} vs {sorted(want)}"
    overall = max(w.abs().max().item() for w in want.values())
    for name in want:
        g, w = got[name], want[name]
        assert g.dtype == w.dtype and g.shape == w.shape, f"d{name}: dtype/shape"
        err = (g - w).abs().max().item()
        tol = rtol * max(w.abs().max().item(), 1e-6 * overall)
        assert err <= tol, (f"d{name}{what}: max abs error {err:.2e} > {tol:.2e} "
                            f"(max|ref| {w.abs().max().item():.2e})")


@pytest.mark.parametrize("S", [1, 17, 70, 130])
@pytest.mark.parametrize("DQK,DV", [(8, 16), (16, 8)])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
@pytest.mark.parametrize("final_grads", [False, True], ids=["dh", "dh+dstate"])
def test_grads_float64_match_reference(S, DQK, DV, with_state, final_grads):
    seed = seed_for("bwd64", S, DQK, DV, with_state, final_grads)
    x = make_inputs(B=2, NH=2, S=S, DQK=DQK, DV=DV, dtype=torch.float64,
                    with_state=with_state, seed=seed)
    gh, gc, gn = _cotangents(x, seed + 1, final_grads, torch.float64)
    got = _grads(mlstm, _leaves(x), gh, gc, gn)
    want = _grads(mlstm_parallel_reference, _leaves(x), gh, gc, gn)
    _assert_grads_match(got, want)


@pytest.mark.parametrize("chunk_size", [1, 16, None])
def test_grads_float64_chunk_sizes(chunk_size):
    x = make_inputs(B=1, NH=2, S=45, DQK=8, DV=8, dtype=torch.float64, with_state=True, seed=9)
    gh, gc, gn = _cotangents(x, 10, True, torch.float64)
    got = _grads(mlstm, _leaves(x), gh, gc, gn, chunk_size=chunk_size)
    want = _grads(mlstm_parallel_reference, _leaves(x), gh, gc, gn)
    _assert_grads_match(got, want, what=f" (chunk_size={chunk_size})")


@pytest.mark.parametrize("eps", [0.0, 1e-6])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_grads_with_floor_active(eps, with_state):
    """Rows where |b_t| < exp(-m_t) take the floor branch of the normalizer; their
    gradient (no d|b_t| term) must still match the reference."""
    x = make_inputs(B=2, NH=2, S=40, DQK=8, DV=16, dtype=torch.float64,
                    with_state=with_state, seed=13, gates="floor")
    if with_state:
        x["n_initial"] = x["n_initial"] * 1e-6   # keep the floor reachable
        x["m_initial"] = x["m_initial"].abs()
    active = floor_active_rows(x)
    assert active.any() and (~active).any(), "test needs rows on both sides of the floor"
    gh, gc, gn = _cotangents(x, 14, True, torch.float64)
    got = _grads(mlstm, _leaves(x), gh, gc, gn, eps=eps)
    want = _grads(mlstm_parallel_reference, _leaves(x), gh, gc, gn, eps=eps)
    _assert_grads_match(got, want, what=" (floor active)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("S", [17, 130])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_grads_low_precision_accuracy_rule(dtype, S, with_state):
    """Low-precision gradients vs the float64 reference's, with the reference's own
    gradients in the input dtype as the baseline (SPEC §5)."""
    seed = seed_for("bwd_lowp", str(dtype), S, with_state)
    x = make_inputs(B=2, NH=2, S=S, DQK=8, DV=16, dtype=dtype, with_state=with_state, seed=seed)
    gh, gc, gn = _cotangents(x, seed + 1, True, dtype)
    got = _grads(mlstm, _leaves(x), gh, gc, gn)
    want64 = _grads(mlstm_parallel_reference, _leaves(x, torch.float64), gh, gc, gn)
    want_lowp = _grads(mlstm_parallel_reference, _leaves(x), gh, gc, gn)
    for name in want64:
        assert got[name].dtype == x[name].dtype, f"d{name} dtype"
        assert_close_to_reference(got[name], want64[name], want_lowp[name], f"d{name}")


def test_m_initial_gets_no_gradient():
    x = make_inputs(B=1, NH=2, S=20, DQK=8, DV=8, dtype=torch.float64, with_state=True, seed=15)
    leaves = _leaves(x)
    leaves["m_initial"].requires_grad_(True)
    h, (c, n, m) = mlstm(**leaves, return_last_states=True)
    assert not m.requires_grad  # the final stabilizer is not differentiable either
    (h.sum() + c.sum() + n.sum()).backward()
    assert leaves["m_initial"].grad is None
    for name in GRAD_INPUTS:
        assert leaves[name].grad is not None, f"{name} got no gradient"


def test_partial_state_grads():
    """Only c_initial given (n_0, m_0 default to zero): dC_0 flows, nothing else breaks."""
    x = make_inputs(B=1, NH=2, S=30, DQK=8, DV=8, dtype=torch.float64, with_state=True, seed=16)
    x["n_initial"] = x["m_initial"] = None
    gh, gc, gn = _cotangents(x, 17, True, torch.float64)
    got = _grads(mlstm, _leaves(x), gh, gc, gn)
    want = _grads(mlstm_parallel_reference, _leaves(x), gh, gc, gn)
    assert set(got) == {"q", "k", "v", "i", "f", "c_initial"}
    _assert_grads_match(got, want)


@pytest.mark.parametrize("how", ["sum", "transposed"])
def test_grads_with_unusual_incoming_gradient_layouts(how):
    """h.sum() hands the backward an expanded (stride-0) dh; a transposed use hands it a
    non-contiguous one. Both must give the reference gradients."""
    x = make_inputs(B=2, NH=2, S=70, DQK=8, DV=16, dtype=torch.float64, seed=18)
    gen = torch.Generator().manual_seed(19)
    w = torch.randn(2, 70, 2, 16, generator=gen, dtype=torch.float64)

    def loss_of(fn, leaves):
        h = fn(**leaves)
        return h.sum() if how == "sum" else (h.transpose(1, 2) * w).sum()

    la, lb = _leaves(x), _leaves(x)
    ga = torch.autograd.grad(loss_of(mlstm, la), [la[k] for k in "qkvif"])
    gb = torch.autograd.grad(loss_of(mlstm_parallel_reference, lb), [lb[k] for k in "qkvif"])
    _assert_grads_match(dict(zip("qkvif", ga)), dict(zip("qkvif", gb)), what=f" ({how})")


@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
@pytest.mark.parametrize("gates", ["typical", "floor"])
@pytest.mark.parametrize("chunk_size", [None, 3, 4], ids=["one_chunk", "two_chunks", "padded"])
def test_gradcheck_float64(with_state, gates, chunk_size):
    """torch.autograd.gradcheck at eps=0, where the stop-gradient on m is exact for h
    (SPEC §2). S=6: chunk_size 3 exercises the cross-chunk state gradient, 4 also a padded
    tail chunk. The final state (C_S, n_S) is stored scaled by exp(-m_S), and m_S itself
    depends on i and f, so the stop-gradient is exact only for the unscaled state
    C_S * exp(m_S), n_S * exp(m_S) (m_S is a non-differentiable output): that is what
    gradcheck sees, which checks the final-state gradients (dC_S, dn_S) too."""
    x = make_inputs(B=1, NH=2, S=6, DQK=4, DV=3, dtype=torch.float64, with_state=with_state,
                    seed=seed_for("gradcheck", with_state, gates), gates=gates)
    names = [k for k in GRAD_INPUTS if x[k] is not None]
    m0 = x["m_initial"]

    def fn(*args):
        kw = dict(zip(names, args))
        h, (c, n, m) = mlstm(**kw, m_initial=m0, eps=0.0, return_last_states=True,
                             chunk_size=chunk_size)
        assert not m.requires_grad
        scale = torch.exp(m)
        return h, c * scale[..., None], n * scale

    args = [x[k].clone().requires_grad_(True) for k in names]
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("S,chunk_size", [(70, None), (5, 2), (130, 64)])
def test_eps_zero_grads_with_padded_tail_chunk(S, chunk_size):
    """eps=0 is valid (SPEC §1/§2); when S is not a multiple of the chunk size the tail chunk
    is padded internally, which must not leak 0/0 = NaN into the gradients."""
    x = make_inputs(B=1, NH=2, S=S, DQK=8, DV=8, dtype=torch.float64, with_state=True, seed=S)
    gh, gc, gn = _cotangents(x, S + 1, True, torch.float64)
    got = _grads(mlstm, _leaves(x), gh, gc, gn, eps=0.0, chunk_size=chunk_size)
    want = _grads(mlstm_parallel_reference, _leaves(x), gh, gc, gn, eps=0.0)
    for name, g in got.items():
        assert torch.isfinite(g).all(), f"d{name} has NaN/inf with eps=0, S={S}"
    _assert_grads_match(got, want)


def test_selected_backward_kernel_on_cpu():
    """The backward of CPU tensors is the ATen chunkwise one; forcing a CUDA family for
    CPU tensors is a ValueError, as for the forward."""
    import xlstm_cuda
    x = make_inputs(B=1, NH=1, S=5, DQK=64, DV=64, dtype=torch.bfloat16, with_state=False,
                    seed=seed_for("sel_bwd_cpu"))
    assert xlstm_cuda.selected_backward_kernel(x["q"], x["v"]) == "aten_chunkwise"
    assert xlstm_cuda.selected_backward_kernel(x["q"], x["v"], "parallel") == "aten_chunkwise"
    with pytest.raises(ValueError, match="backend"):
        xlstm_cuda.selected_backward_kernel(x["q"], x["v"], backend="sm80")
