"""GPU tests (SPEC §3-§6): parity of every compiled kernel family with the float64
reference on NaN-poisoned memory, gradients on CUDA, and dispatch. Skipped, with the
reason shown, on machines without a CUDA GPU."""
import pytest
import torch

import xlstm_cuda
from conftest import (KERNEL_FAMILY_PARAMS, assert_close_to_reference, assert_outputs_close,
                      family_runs_here, make_inputs, poison_cuda_allocator, reference_pair,
                      requires_cuda, seed_for)
from xlstm_cuda import mlstm, mlstm_parallel_reference

pytestmark = requires_cuda

ERRORS = (ValueError, TypeError, RuntimeError)
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
DTYPE_IDS = ["bf16", "fp16", "fp32"]
# Every kernel family compiled into this build, plus "auto" (capability dispatch).
BACKEND_PARAMS = KERNEL_FAMILY_PARAMS + [pytest.param("auto", id="auto")]


def _cuda_inputs(S, DQK, DV, dtype, with_state, seed, B=2, NH=2, gates="typical"):
    return make_inputs(B=B, NH=NH, S=S, DQK=DQK, DV=DV, dtype=dtype, device="cuda",
                       with_state=with_state, seed=seed, gates=gates)


def _skip_unsupported(backend, dtype, algorithm="auto"):
    if backend == "sm75" and dtype == torch.bfloat16 and algorithm == "parallel":
        pytest.skip("sm75 has no bfloat16 kernel (tested as an error below)")


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("S", [1, 17, 64, 127, 1000])
@pytest.mark.parametrize("DQK,DV", [(64, 64), (128, 256), (256, 512)])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_forward_parity(backend, dtype, S, DQK, DV, with_state):
    x = _cuda_inputs(S, DQK, DV, dtype, with_state,
                     seed=seed_for("gpu_fwd", backend, str(dtype), S, DQK, with_state))
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    poison_cuda_allocator()
    out = mlstm(**x, return_last_states=True, backend=backend)
    torch.cuda.synchronize()
    assert out[0].dtype == dtype and out[0].device.type == "cuda"
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)
    # The h-only call (no final-state pass) writes every element too.
    poison_cuda_allocator()
    h = mlstm(**x, backend=backend)
    assert_close_to_reference(h, ref64[0], ref_lowp[0], "h (return_last_states=False)")


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("algorithm", xlstm_cuda.ALGORITHMS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_every_algorithm_parity(backend, algorithm, dtype):
    _skip_unsupported(backend, dtype, algorithm)
    x = _cuda_inputs(300, 128, 128, dtype, True, seed=seed_for("algo", backend, algorithm))
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    poison_cuda_allocator()
    out = mlstm(**x, return_last_states=True, backend=backend, algorithm=algorithm)
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_strided_inputs_on_gpu(backend, dtype):
    """(B, S, NH, D)-layout views (only the last dim has stride 1) give the contiguous
    result: kernels must honour the strides (SPEC §3)."""
    B, NH, S, D = 2, 2, 200, 64
    x = _cuda_inputs(S, D, D, dtype, False, seed=5)
    strided = dict(x)
    for key in "qkvif":
        strided[key] = x[key].transpose(1, 2).contiguous().transpose(1, 2)
        assert not strided[key].is_contiguous()
    ref64, ref_lowp = reference_pair(x)
    poison_cuda_allocator()
    h = mlstm(**strided, backend=backend)
    assert_close_to_reference(h, ref64, ref_lowp, "h (strided inputs)")


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_extreme_gates_on_gpu(backend, dtype):
    x = _cuda_inputs(257, 64, 64, dtype, True, seed=6, gates="extreme")
    h, (c, n, m) = mlstm(**x, return_last_states=True, backend=backend)
    for name, t in [("h", h), ("c", c), ("n", n), ("m", m)]:
        assert torch.isfinite(t).all(), f"{name} not finite for |i|, |f| up to 1e4"


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("S,DQK,DV", [(1000, 128, 128), (300, 128, 256), (300, 64, 64)])
def test_wide_input_gates_parity(backend, dtype, S, DQK, DV):
    """Input gates ~ 12 N(0,1): masked tiles on both sides of the sm90 forward's
    factoring limit (tiles of 128 and of 64 keys, both consumer schedules)."""
    _skip_unsupported(backend, dtype, "parallel")
    x = _cuda_inputs(S, DQK, DV, dtype, True, gates="wide",
                     seed=seed_for("gpu_fwd_wide", backend, str(dtype), S, DQK, DV))
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    poison_cuda_allocator()
    out = mlstm(**x, return_last_states=True, algorithm="parallel", backend=backend)
    torch.cuda.synchronize()
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("algorithm", ["parallel", "chunkwise"])
def test_initial_state_beyond_fp16_range(backend, algorithm):
    """fp16 inputs with |C0| ~ 1e6, past fp16's range even after the 1/sqrt(DQK) scale:
    a kernel that forms q̂ C0 on 16-bit tensor cores must rescale the state, not let it
    overflow. q is small so that q̂ C0 (and the fp16 reference) stay finite."""
    x = _cuda_inputs(100, 64, 64, torch.float16, True, seed=14)
    x["q"] = (x["q"].float() * 1e-3).half()
    x["c_initial"] = x["c_initial"] * 1e6
    x["n_initial"] = x["n_initial"] * 1e6
    assert (x["c_initial"].abs() / 8).max() > 65504  # scale * C0 overflows fp16
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    assert torch.isfinite(ref_lowp[0]).all()  # the accuracy rule's bound stays finite
    poison_cuda_allocator()
    out = mlstm(**x, return_last_states=True, backend=backend, algorithm=algorithm)
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("algorithm", ["parallel", "chunkwise"])
def test_state_gradients_beyond_fp16_range(backend, algorithm):
    """The backward's state terms with fp16 inputs and states past fp16's range: |C0| up to
    ~5e5 and a final-state gradient |dC| up to ~5e5, with small q, k, v so that the
    gradients themselves stay in range. Kernels that form dh C0^T, v dC^T and k dC on
    16-bit tensor cores must rescale the states. The normalizer q̂ . n0 is kept well away
    from 0 (n0 along e_0, q_0 ~ 6 +- 1), so that no gradient is huge for its own reasons."""
    S, DQK, DV = 100, 64, 64
    x = _cuda_inputs(S, DQK, DV, torch.float16, True, seed=15)
    for key in "qkv":
        x[key] = (x[key].float() * 1e-3).half()
    x["q"][..., 0] += 6e-3
    x["c_initial"] = x["c_initial"] * 1e5
    x["n_initial"] = torch.zeros_like(x["n_initial"])
    x["n_initial"][..., 0] = 1e6
    gen = torch.Generator().manual_seed(16)
    gh = torch.randn(2, 2, S, DV, generator=gen, dtype=torch.float64).cuda()
    gc = 1e5 * torch.randn(2, 2, DQK, DV, generator=gen, dtype=torch.float64).cuda()
    assert x["c_initial"].abs().max() > 65504 and gc.abs().max() > 65504
    names = ["q", "k", "v", "i", "f", "c_initial", "n_initial"]

    def grads(fn, inputs, **kw):
        leaves = {k: (t.detach().clone().requires_grad_(k in names) if t is not None else None)
                  for k, t in inputs.items()}
        h, (c, _n, _m) = fn(**leaves, return_last_states=True, **kw)
        loss = (h.double() * gh).sum() + (c.double() * gc).sum()
        return dict(zip(names, torch.autograd.grad(loss, [leaves[k] for k in names])))

    x64 = {k: (t.double() if t is not None else None) for k, t in x.items()}
    want64 = grads(mlstm_parallel_reference, x64)
    want_lowp = grads(mlstm_parallel_reference, x)
    poison_cuda_allocator()
    got = grads(mlstm, x, backend=backend, algorithm=algorithm)
    for name in names:
        assert torch.isfinite(got[name]).all(), f"d{name} not finite"
    for name in ["q", "k", "v"]:  # the gradients that carry the state terms
        assert torch.isfinite(want_lowp[name]).all()  # the rule's bound stays finite
        assert_close_to_reference(got[name], want64[name], want_lowp[name], f"d{name}")


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("S,DQK,DV", [(127, 64, 64), (300, 128, 256)])
def test_gradient_parity(backend, dtype, S, DQK, DV):
    seed = seed_for("gpu_bwd", backend, str(dtype), S)
    x = _cuda_inputs(S, DQK, DV, dtype, True, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    gh = torch.randn(2, 2, S, DV, generator=gen, dtype=torch.float64).to(dtype).cuda()
    gc = torch.randn(2, 2, DQK, DV, generator=gen, dtype=torch.float64).cuda()
    names = ["q", "k", "v", "i", "f", "c_initial", "n_initial"]

    def grads(fn, inputs, **kw):
        leaves = {k: (t.detach().clone().requires_grad_(k in names) if t is not None else None)
                  for k, t in inputs.items()}
        h, (c, _n, _m) = fn(**leaves, return_last_states=True, **kw)
        loss = (h.double() * gh.double()).sum() + (c.double() * gc).sum()
        return dict(zip(names, torch.autograd.grad(loss, [leaves[k] for k in names])))

    x64 = {k: (t.double() if t is not None else None) for k, t in x.items()}
    poison_cuda_allocator()
    got = grads(mlstm, x, backend=backend)
    want64 = grads(mlstm_parallel_reference, x64)
    want_lowp = grads(mlstm_parallel_reference, x)
    for name in names:
        assert got[name].dtype == x[name].dtype
        assert_close_to_reference(got[name], want64[name], want_lowp[name], f"d{name}")


@pytest.mark.parametrize("family", KERNEL_FAMILY_PARAMS)
def test_backend_argument_and_env_force_the_family(family, monkeypatch):
    x = _cuda_inputs(64, 64, 64, torch.float16, False, seed=7)
    assert xlstm_cuda.selected_kernel(x["q"], x["v"], backend=family).startswith(family + ":")
    monkeypatch.setenv("XLSTM_CUDA_BACKEND", family)
    assert xlstm_cuda.selected_kernel(x["q"], x["v"]).startswith(family + ":")
    # The env var changes what mlstm runs: same answer as the explicit argument.
    h_env = mlstm(**x)
    monkeypatch.delenv("XLSTM_CUDA_BACKEND")
    torch.testing.assert_close(h_env, mlstm(**x, backend=family), rtol=0, atol=0)


def test_auto_dispatch_follows_compute_capability():
    x = _cuda_inputs(64, 64, 64, torch.float16, False, seed=8)
    major, minor = torch.cuda.get_device_capability()
    cc = 10 * major + minor
    expected = "sm90" if cc == 90 else "sm80" if cc >= 80 else "sm75"
    assert xlstm_cuda.selected_kernel(x["q"], x["v"]).startswith(expected + ":")


@pytest.mark.parametrize("family", ["sm90", "sm80", "sm75"])
def test_forcing_a_family_the_gpu_cannot_run_raises(family):
    if family_runs_here(family):
        cc = torch.cuda.get_device_capability()
        pytest.skip(f"this GPU (compute capability {cc[0]}.{cc[1]}) can run {family}")
    x = _cuda_inputs(64, 64, 64, torch.float16, False, seed=9)
    with pytest.raises(ERRORS, match="backend") as info:
        mlstm(**x, backend=family)
    assert family in str(info.value)
    torch.cuda.synchronize()  # no sticky CUDA error


def test_sm75_bf16_parallel_is_a_clear_error():
    if not family_runs_here("sm75") or "sm75" not in xlstm_cuda.KERNEL_FAMILIES:
        pytest.skip("the sm75 family is not compiled or cannot run on this GPU")
    x = _cuda_inputs(64, 64, 64, torch.bfloat16, False, seed=10)
    with pytest.raises(ERRORS, match="bfloat16"):
        mlstm(**x, backend="sm75", algorithm="parallel")
    torch.cuda.synchronize()


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("DQK,DV", [(48, 64), (64, 96), (32, 32)])
def test_other_head_dims_correct_or_clear_error(backend, DQK, DV):
    """SPEC §3: head dims outside the kernels' set get a clear error naming what is
    supported, or a correct (slower) path."""
    x = _cuda_inputs(100, DQK, DV, torch.bfloat16, True, seed=11)
    try:
        out = mlstm(**x, return_last_states=True, backend=backend)
    except ERRORS as exc:
        assert "DQK" in str(exc) or "DV" in str(exc) or "head dim" in str(exc)
        torch.cuda.synchronize()
        return
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)


def test_nan_input_does_not_poison_other_heads_or_process():
    x = _cuda_inputs(200, 64, 64, torch.bfloat16, False, seed=12)
    ref64, ref_lowp = reference_pair(x)
    x["k"][0, 1, 50, 3] = float("nan")
    h = mlstm(**x)
    torch.cuda.synchronize()
    assert not torch.isfinite(h[0, 1, 50:]).all()
    mask = torch.ones(2, 2, dtype=torch.bool)
    mask[0, 1] = False
    assert_close_to_reference(h[mask], ref64[mask], ref_lowp[mask], "h (clean heads)")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cuda_matches_cpu(dtype):
    """The same inputs on CPU and on CUDA give the same function (within the rule)."""
    x = make_inputs(B=1, NH=2, S=90, DQK=64, DV=64, dtype=dtype, with_state=True, seed=13)
    xc = {k: (t.cuda() if t is not None else None) for k, t in x.items()}
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    for inputs in (x, xc):
        out = mlstm(**inputs, return_last_states=True)
        out = (out[0].cpu(), tuple(t.cpu() for t in out[1]))
        assert_outputs_close(out, ref64, ref_lowp, with_states=True)


def test_poisoning_harness_works():
    """The harness itself: after poisoning, fresh CUDA allocations really hold NaN, so an
    unwritten output element cannot pass the accuracy rule by luck."""
    keep = [torch.randn(n, device="cuda") for n in (300, 70_000, 3_000_000)]  # busy segments
    junk = [torch.randn(n, device="cuda") for n in (1000, 200_000, 4 * 1024 * 1024)]
    del junk  # free, non-NaN blocks in the cache: what poisoning has to overwrite
    poison_cuda_allocator()
    sizes = (1000, 200_000, 4 * 1024 * 1024, 50_000_000)
    fresh = [torch.empty(n, device="cuda") for n in sizes]  # before any temporary is made
    for n, t in zip(sizes, fresh):
        assert torch.isnan(t).all(), f"empty({n}) is not poisoned"
    del keep


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_odd_batch_and_head_counts(backend, dtype):
    """B and NH that are not powers of two (grid/indexing bugs show up per slice)."""
    x = _cuda_inputs(129, 64, 128, dtype, True, seed=14, B=3, NH=5)
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    poison_cuda_allocator()
    out = mlstm(**x, return_last_states=True, backend=backend)
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_many_work_items_per_cta(backend, dtype):
    """B * NH * ceil(S / 128) = 480 row tiles: the persistent sm90 kernel's CTAs take
    several work items each (pipeline and barrier phases carried across items)."""
    _skip_unsupported(backend, dtype, "parallel")
    x = _cuda_inputs(300, 64, 128, dtype, True, seed=16, B=4, NH=40)
    ref64, ref_lowp = reference_pair(x, return_last_states=True)
    poison_cuda_allocator()
    out = mlstm(**x, return_last_states=True, backend=backend, algorithm="parallel")
    assert_outputs_close(out, ref64, ref_lowp, with_states=True)


@pytest.mark.parametrize("family", KERNEL_FAMILY_PARAMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("DQK", [64, 128, 256])
@pytest.mark.parametrize("DV", [64, 128, 256, 512])
def test_spec_head_dims_run_a_family_kernel(family, dtype, DQK, DV):
    """SPEC §3: the GPU kernels cover DQK in {64, 128, 256} x DV in {64, 128, 256, 512}:
    algorithm='parallel' must pick a kernel of the family, not the ATen fallback."""
    if family == "sm75" and dtype == torch.bfloat16:
        pytest.skip("sm75 has no bfloat16 kernel (Turing has no bf16 MMA)")
    q = torch.empty(1, 1, 16, DQK, dtype=dtype, device="cuda")
    v = torch.empty(1, 1, 16, DV, dtype=dtype, device="cuda")
    name = xlstm_cuda.selected_kernel(q, v, algorithm="parallel", backend=family)
    assert name.startswith(family + ":") and "aten" not in name, name


@pytest.mark.parametrize("family", KERNEL_FAMILY_PARAMS)
def test_64bit_indexing(family):
    """SPEC §3: more than 2^31 elements in q, k, v and h (B*NH*S*D = 2^31 + ...). The first
    and the last (batch, head) slices are checked against the reference on that slice."""
    free, _total = torch.cuda.mem_get_info()
    if free < 40 * 2**30:
        pytest.skip("needs ~40 GiB of free GPU memory")
    B, NH, S, D = 2, 16385, 1024, 64          # 2 * 16385 * 1024 * 64 > 2^31
    gen = torch.Generator(device="cuda").manual_seed(15)
    dt = torch.float16
    q = torch.randn(B, NH, S, D, generator=gen, device="cuda", dtype=dt)
    k = torch.randn(B, NH, S, D, generator=gen, device="cuda", dtype=dt)
    v = torch.randn(B, NH, S, D, generator=gen, device="cuda", dtype=dt)
    i = 2 * torch.randn(B, NH, S, generator=gen, device="cuda")
    f = 2 * torch.randn(B, NH, S, generator=gen, device="cuda") + 3
    assert q.numel() > 2**31
    h = mlstm(q, k, v, i, f, backend=family, algorithm="parallel")
    for b, hd in [(0, 0), (B - 1, NH - 1), (B - 1, NH // 2)]:
        xs = {name: t[b:b + 1, hd:hd + 1] for name, t in zip("qkvif", (q, k, v, i, f))}
        ref64, ref_lowp = reference_pair(xs)
        assert_close_to_reference(h[b:b + 1, hd:hd + 1], ref64, ref_lowp, f"h[{b},{hd}]")
    del q, k, v, h
    torch.cuda.empty_cache()
