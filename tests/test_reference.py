"""The two pure-PyTorch references (the test oracle) agree with each other in float64,
and with a direct, independent transcription of SPEC §1 at a few points."""
import math

import pytest
import torch

from conftest import make_inputs, rel_err, to_dtype
from xlstm_cuda import mlstm_parallel_reference, mlstm_recurrent_reference


@pytest.mark.parametrize("S", [1, 2, 17, 63, 130])
@pytest.mark.parametrize("DQK,DV", [(8, 16), (16, 8)])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
def test_references_agree_float64(S, DQK, DV, with_state):
    x = make_inputs(B=2, NH=2, S=S, DQK=DQK, DV=DV, dtype=torch.float64,
                    with_state=with_state, seed=1000 + S)
    h_p, (c_p, n_p, m_p) = mlstm_parallel_reference(**x, return_last_states=True)
    h_r, (c_r, n_r, m_r) = mlstm_recurrent_reference(**x, return_last_states=True)
    assert h_p.dtype == torch.float64 and h_p.shape == (2, 2, S, DV)
    assert c_p.shape == (2, 2, DQK, DV) and n_p.shape == (2, 2, DQK) and m_p.shape == (2, 2, 1)
    for name, a, b in [("h", h_p, h_r), ("c", c_p, c_r), ("n", n_p, n_r), ("m", m_p, m_r)]:
        assert torch.isfinite(a).all() and torch.isfinite(b).all(), name
        assert rel_err(a, b) <= 1e-10, f"{name}: references differ by {rel_err(a, b):.2e}"


def _spec_direct(x, eps):
    """SPEC §1 recurrence for one (b, h), scalar loops in Python floats (float64)."""
    q, k, v, i, f = (x[n][0, 0].tolist() for n in "qkvif")
    S, DQK, DV = len(q), len(q[0]), len(v[0])
    C = [[0.0] * DV for _ in range(DQK)]
    n = [0.0] * DQK
    m = 0.0
    hs = []
    for t in range(S):
        lf = -math.log1p(math.exp(-f[t])) if f[t] > 0 else f[t] - math.log1p(math.exp(f[t]))
        m_new = max(lf + m, i[t])
        fg, ig = math.exp(lf + m - m_new), math.exp(i[t] - m_new)
        C = [[fg * C[a][b] + ig * k[t][a] * v[t][b] for b in range(DV)] for a in range(DQK)]
        n = [fg * n[a] + ig * k[t][a] for a in range(DQK)]
        m = m_new
        qs = [qa / math.sqrt(DQK) for qa in q[t]]
        den = max(abs(sum(na * qa for na, qa in zip(n, qs))), math.exp(-m)) + eps
        hs.append([sum(C[a][b] * qs[a] for a in range(DQK)) / den for b in range(DV)])
    return torch.tensor(hs, dtype=torch.float64)


@pytest.mark.parametrize("gates", ["typical", "floor"])
def test_reference_matches_spec_transcription(gates):
    x = to_dtype(make_inputs(B=1, NH=1, S=9, DQK=4, DV=3, seed=7, gates=gates), torch.float64)
    expected = _spec_direct(x, eps=1e-6)
    for ref in (mlstm_parallel_reference, mlstm_recurrent_reference):
        h = ref(**x, eps=1e-6)[0, 0]
        assert rel_err(h, expected) <= 1e-12, ref.__name__


def test_family_table_follows_spec_dispatch():
    """SPEC §6: sm90 code runs only on 9.0; sm80 on 8.0 and newer; sm75 on 7.5 and newer."""
    from xlstm_cuda.families import family_runs_on
    runs = {cc: [fam for fam in ("sm75", "sm80", "sm90") if family_runs_on(fam, cc)]
            for cc in [(7, 0), (7, 5), (8, 0), (8, 9), (9, 0), (10, 0)]}
    assert runs == {(7, 0): [], (7, 5): ["sm75"], (8, 0): ["sm75", "sm80"],
                    (8, 9): ["sm75", "sm80"], (9, 0): ["sm75", "sm80", "sm90"],
                    (10, 0): ["sm75", "sm80"]}
