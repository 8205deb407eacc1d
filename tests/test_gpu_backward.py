"""GPU backward (SPEC §2, §5): the kernel families' tiled backward against autograd
through the float64 reference (stabilizer detached, as the reference does), on
NaN-poisoned memory; bitwise reproducibility; agreement with the ATen backward; a
short GPU training run. Skipped, with the reason shown, on machines without a GPU."""
import copy

import pytest
import torch

import xlstm_cuda
from conftest import (KERNEL_FAMILY_PARAMS, assert_close_to_reference, make_inputs,
                      poison_cuda_allocator, requires_cuda, seed_for, to_dtype)
from xlstm_cuda import mlstm, mlstm_parallel_reference

pytestmark = requires_cuda

GRAD_INPUTS = ("q", "k", "v", "i", "f", "c_initial", "n_initial")
HALF_DTYPES = [torch.bfloat16, torch.float16]
HALF_IDS = ["bf16", "fp16"]
# Forcing sm80 / sm75 runs those families' backward kernels (the sm75 family's is the
# sm80 kernels' Turing build); capability dispatch ("auto") runs the sm90 family's
# WGMMA backward on a 9.0 GPU, and the sm80 kernels for head dims it does not take
# (DV 512 here): together they cover every backward kernel of the build.
BACKEND_PARAMS = [p for p in KERNEL_FAMILY_PARAMS if p.values[0] in ("sm80", "sm75")] + \
    [pytest.param("auto", id="auto")]
HEAD_DIMS = [(64, 64), (128, 256), (256, 512), (256, 64), (64, 512), (128, 128)]


def _inputs(S, DQK, DV, dtype, with_state, seed, B=2, NH=2, gates="typical"):
    return make_inputs(B=B, NH=NH, S=S, DQK=DQK, DV=DV, dtype=dtype, device="cuda",
                       with_state=with_state, seed=seed, gates=gates)


def _cotangents(x, seed, final_state_grads):
    """Random incoming gradients. For float16 they are scaled by 1/32: the gradients
    reach ~3e4 at S = 1000 with N(0, 1) cotangents, and the float16 reference (the
    accuracy rule's baseline) overflows in its intermediate sums there. The gradient is
    linear in the cotangents, so this changes nothing but the magnitudes."""
    gen = torch.Generator().manual_seed(seed)
    B, NH, S, DQK = x["q"].shape
    DV = x["v"].shape[-1]
    mag = 1 / 32 if x["q"].dtype == torch.float16 else 1.0
    gh = (mag * torch.randn(B, NH, S, DV, generator=gen, dtype=torch.float64)).to(
        x["q"].dtype).cuda()
    if not final_state_grads:
        return gh, None, None
    gc = mag * torch.randn(B, NH, DQK, DV, generator=gen, dtype=torch.float64).cuda()
    gn = mag * torch.randn(B, NH, DQK, generator=gen, dtype=torch.float64).cuda()
    return gh, gc, gn


def _grads(fn, x, gh, gc, gn, poison=False, **kw):
    """Gradients of <h, gh> (+ <C_S, gc> + <n_S, gn>) w.r.t. every differentiable input."""
    leaves = {k: (t.detach().clone().requires_grad_(k in GRAD_INPUTS) if t is not None else None)
              for k, t in x.items()}
    final = gc is not None
    out = fn(**leaves, return_last_states=final, **kw)
    h, (c, n, _m) = out if final else (out, (None, None, None))
    loss = (h.double() * gh.double()).sum()
    if final:
        loss = loss + (c.double() * gc).sum() + (n.double() * gn).sum()
    names = [k for k in GRAD_INPUTS if leaves.get(k) is not None]
    if poison:
        poison_cuda_allocator()
    return dict(zip(names, torch.autograd.grad(loss, [leaves[k] for k in names])))


def _check_against_reference(x, gh, gc, gn, **kw):
    got = _grads(mlstm, x, gh, gc, gn, poison=True, **kw)
    want64 = _grads(mlstm_parallel_reference, to_dtype(x, torch.float64), gh, gc, gn)
    want_lowp = _grads(mlstm_parallel_reference, x, gh, gc, gn)
    assert set(got) == set(want64)
    for name in want64:
        assert got[name].dtype == x[name].dtype, f"d{name} dtype"
        assert torch.isfinite(want_lowp[name]).all(), \
            f"d{name}: the low-precision reference overflowed (test bug: no baseline)"
        assert_close_to_reference(got[name], want64[name], want_lowp[name], f"d{name}")


def _skip_sm75_bf16(backend, dtype):
    if backend == "sm75" and dtype == torch.bfloat16:
        pytest.skip("the sm75 family has no bfloat16 kernel (Turing: no bf16 MMA)")


def _require_kernel(x, backend):
    name = xlstm_cuda.selected_backward_kernel(x["q"], x["v"], "parallel", backend)
    assert name.endswith("_backward"), f"expected a backward kernel, got {name}"


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("DQK,DV", HEAD_DIMS)
@pytest.mark.parametrize("S", [1, 17, 127, 1000])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_backward_kernel_parity(backend, dtype, DQK, DV, S, with_state):
    _skip_sm75_bf16(backend, dtype)
    seed = seed_for("gpu_bwd_kernel", backend, str(dtype), DQK, DV, S, with_state)
    x = _inputs(S, DQK, DV, dtype, with_state, seed)
    _require_kernel(x, backend)
    gh, gc, gn = _cotangents(x, seed + 1, final_state_grads=with_state)
    _check_against_reference(x, gh, gc, gn, algorithm="parallel", backend=backend)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("DQK,DV", [(64, 64), (128, 256)])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_backward_kernel_long_sequence(dtype, DQK, DV, with_state):
    seed = seed_for("gpu_bwd_long", str(dtype), DQK, DV, with_state)
    x = _inputs(4097, DQK, DV, dtype, with_state, seed, B=1)
    _require_kernel(x, "auto")
    gh, gc, gn = _cotangents(x, seed + 1, final_state_grads=with_state)
    _check_against_reference(x, gh, gc, gn, algorithm="parallel")


_EXTREME_GATES_XFAIL = pytest.mark.xfail(
    strict=True,
    reason="known limitation of the sm80-family backward (sm80 and sm75 kernels; measured "
           "on H100 with those kernels; the sm90 backward passes): with |i| ~ 1e4, float16, "
           "the kernel's dv is at 1.6x the accuracy-rule bound (2.6e-3 vs 1.6e-3); bfloat16 "
           "with an initial state, dI at 1.53x (6.5e-1 vs 4.2e-1); fp32 log-weight precision "
           "is ruled out (fp64-exact exponents changed nothing); suspected: the 16-bit "
           "rounding of the large, cancelling weights w s / den fed to the MMAs")


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("gates", ["extreme", "floor"])
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "no_state"])
def test_backward_kernel_gate_regimes(backend, dtype, gates, with_state, request):
    """Gate regimes where the normalizer's gradient cancels the numerator's (extreme) or
    its floor is active (floor). Without C0 the backward takes that gradient from
    dh . h (the forward's output) for sequences with moderate gate terms (floor) and
    from its row pass for the others (extreme)."""
    _skip_sm75_bf16(backend, dtype)
    seed = seed_for("gpu_bwd_gates", str(dtype), gates, *([] if with_state else ["no_state"]))
    x = _inputs(300, 64, 128, dtype, with_state, seed, gates=gates)
    _require_kernel(x, backend)
    sm90 = xlstm_cuda.selected_backward_kernel(x["q"], x["v"], "parallel", backend).endswith(
        "sm90_backward")
    if gates == "extreme" and not sm90 and (dtype == torch.float16 or with_state):
        request.applymarker(_EXTREME_GATES_XFAIL)
    gh, gc, gn = _cotangents(x, seed + 1, final_state_grads=True)
    _check_against_reference(x, gh, gc, gn, algorithm="parallel", backend=backend)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("DQK,DV", [(64, 128), (128, 256)])
def test_row_pass_for_some_sequences(backend, dtype, DQK, DV):
    """One call where some sequences take the normalizer's gradient from the forward's
    output and the others (extreme gates) from the row pass over just those sequences
    (csrc/cuda/normalizer_grad.h); with final-state gradients."""
    _skip_sm75_bf16(backend, dtype)
    if backend == "sm75" and DQK + DV > 320:
        pytest.skip("the sm75 family's backward tiles fit 64 KB of shared memory up to "
                    "DQK + DV = 320")
    seed = seed_for("gpu_bwd_mixed_rows", str(dtype), DQK, DV)
    x = _inputs(200, DQK, DV, dtype, False, seed, B=3, NH=3)
    extreme = _inputs(200, DQK, DV, dtype, False, seed + 7, B=3, NH=3, gates="extreme")
    for b, h in [(0, 1), (1, 2), (2, 0)]:
        x["i"][b, h] = extreme["i"][b, h]
        x["f"][b, h] = extreme["f"][b, h]
    _require_kernel(x, backend)
    gh, gc, gn = _cotangents(x, seed + 1, final_state_grads=True)
    _check_against_reference(x, gh, gc, gn, algorithm="parallel", backend=backend)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
@pytest.mark.parametrize("DQK,DV", [(64, 128), (128, 256)])
def test_many_work_items_per_cta(dtype, DQK, DV):
    """The sm90 kernels are persistent (one CTA per SM claims work items from a counter):
    B * NH * ceil(S / 128) = 480 items here, several per CTA on any GPU, so each CTA
    carries its pipeline and barrier phases across items of different lengths."""
    seed = seed_for("gpu_many_items", str(dtype), DQK, DV)
    x = _inputs(300, DQK, DV, dtype, True, seed, B=4, NH=40)
    _require_kernel(x, "auto")
    gh, gc, gn = _cotangents(x, seed + 1, final_state_grads=True)
    _check_against_reference(x, gh, gc, gn, algorithm="parallel")


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
def test_final_state_grads_without_initial_state(dtype):
    seed = seed_for("gpu_bwd_final_only", str(dtype))
    x = _inputs(200, 128, 128, dtype, False, seed)
    gh, gc, gn = _cotangents(x, seed + 1, final_state_grads=True)
    _check_against_reference(x, gh, gc, gn, algorithm="parallel")


def test_strided_inputs_and_gradients():
    """q, k, v as views of one packed projection (row stride 3*D) and a transposed dh."""
    seed = seed_for("gpu_bwd_strided")
    B, NH, S, D = 2, 2, 150, 64
    gen = torch.Generator().manual_seed(seed)
    packed = torch.randn(B, S, NH, 3 * D, generator=gen).to(torch.bfloat16).cuda()
    x = _inputs(S, D, D, torch.bfloat16, True, seed)
    x["q"], x["k"], x["v"] = (packed[..., j * D:(j + 1) * D].transpose(1, 2) for j in range(3))
    assert x["q"].stride(2) == NH * 3 * D
    gh = torch.randn(B, S, NH, D, generator=gen).to(torch.bfloat16).cuda().transpose(1, 2)
    _check_against_reference(x, gh, None, None, algorithm="parallel")


def test_backward_is_bitwise_reproducible():
    seed = seed_for("gpu_bwd_repro")
    x = _inputs(700, 128, 256, torch.bfloat16, True, seed)
    gh, gc, gn = _cotangents(x, seed + 1, final_state_grads=True)
    a = _grads(mlstm, x, gh, gc, gn, algorithm="parallel")
    b = _grads(mlstm, x, gh, gc, gn, algorithm="parallel")
    for name in a:
        assert torch.equal(a[name], b[name]), f"d{name} differs between two identical runs"


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=HALF_IDS)
def test_kernel_backward_matches_aten_backward(dtype):
    """Same gradients (to low-precision rounding) as the ATen chunkwise backward."""
    seed = seed_for("gpu_bwd_vs_aten", str(dtype))
    x = _inputs(333, 128, 128, dtype, True, seed)
    gh, gc, gn = _cotangents(x, seed + 1, final_state_grads=True)
    got = _grads(mlstm, x, gh, gc, gn, algorithm="parallel")
    aten = _grads(mlstm, x, gh, gc, gn, backend="aten")
    for name in got:
        scale = aten[name].double().abs().max().item()
        err = (got[name].double() - aten[name].double()).abs().max().item()
        assert err <= 2e-2 * scale, f"d{name}: kernel vs ATen {err:.3e} (max|g| {scale:.3e})"


def test_float64_gradcheck_on_gpu():
    """float64 runs the ATen backward on the GPU: gradcheck at eps=0. The final state is
    checked unscaled (C_S exp(m_S), n_S exp(m_S)), where the stop-gradient on m is exact
    (see test_backward_cpu.test_gradcheck_float64)."""
    x = _inputs(21, 8, 16, torch.float64, True, seed_for("gpu_gradcheck"), B=1)
    names = [k for k in GRAD_INPUTS]
    args = tuple(x[k].detach().clone().requires_grad_(True) for k in names)

    def fn(*a):
        kw = dict(zip(names, a))
        h, (c, n, m) = mlstm(**kw, m_initial=x["m_initial"], eps=0.0, return_last_states=True)
        return h, c * torch.exp(m)[..., None], n * torch.exp(m)

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5)


class _TinyModel(torch.nn.Module):
    """Embedding -> mLSTM (bf16 q, k, v; 2 heads of 64) -> linear readout."""

    def __init__(self, vocab=16, NH=2, D=64, algorithm="parallel", backend="auto"):
        super().__init__()
        self.NH, self.D, self.algorithm, self.backend = NH, D, algorithm, backend
        self.embed = torch.nn.Embedding(vocab, NH * D)
        self.qkv = torch.nn.Linear(NH * D, 3 * NH * D)
        self.gates = torch.nn.Linear(NH * D, 2 * NH)
        torch.nn.init.constant_(self.gates.bias[NH:], 3.0)
        self.out = torch.nn.Linear(NH * D, vocab)

    def forward(self, tokens):
        B, S = tokens.shape
        x = self.embed(tokens)
        heads = [t.view(B, S, self.NH, self.D).transpose(1, 2).to(torch.bfloat16)
                 for t in self.qkv(x).chunk(3, dim=-1)]
        i, f = self.gates(x).view(B, S, 2, self.NH).permute(2, 0, 3, 1)
        h = mlstm(*heads, i, f, algorithm=self.algorithm, backend=self.backend)
        return self.out(h.float().transpose(1, 2).reshape(B, S, -1))


def test_gpu_training_follows_aten_path_and_learns():
    torch.manual_seed(0)
    model = _TinyModel().cuda()
    aten_model = copy.deepcopy(model)
    aten_model.backend = "aten"
    assert xlstm_cuda.selected_backward_kernel(
        torch.empty(1, 2, 8, 64, device="cuda", dtype=torch.bfloat16),
        torch.empty(1, 2, 8, 64, device="cuda", dtype=torch.bfloat16), "parallel", "auto"
    ).endswith("_backward")

    def train(m, steps=40):
        gen = torch.Generator().manual_seed(1)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        losses = []
        for _ in range(steps):
            tokens = torch.randint(1, 16, (8, 96), generator=gen)
            target = torch.roll(tokens, 2, dims=1)
            target[:, :2] = 0
            logits = m(tokens.cuda())
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.cuda().flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    losses, aten_losses = train(model), train(aten_model)
    # Two correct bf16 backwards round differently, and Adam's normalized steps amplify
    # the differences over the steps (a chaotic trajectory). Measured on an H100: two
    # kernel backwards that differ only in the fp32 summation order of one dot product per
    # row agree to 4 digits for 6 steps and then drift apart, by 4 % at step 24; kernel
    # and ATen paths agree within 1.5 % for 10 steps, then differ by up to 12 % per step
    # and 2.8 / 8.1 / 5.1 % in the means of steps 10-19 / 20-29 / 30-39. So: step by step
    # while the trajectories are still one, then the means of 10-step windows.
    for step, (a, b) in enumerate(zip(losses[:10], aten_losses[:10])):
        assert abs(a - b) <= 3e-2 * abs(b), f"step {step}: kernel path {a} vs ATen path {b}"
    for w in range(10, len(losses), 10):
        a, b = sum(losses[w:w + 10]) / 10, sum(aten_losses[w:w + 10]) / 10
        assert abs(a - b) <= 0.15 * b, f"steps {w}-{w + 9}: kernel path {a} vs ATen path {b}"
    for path in (losses, aten_losses):
        assert sum(path[-5:]) / 5 < 0.8 * sum(path[:5]) / 5, path
