#include "aten/mlstm_chunkwise_aten.h"

#include <cmath>
#include <limits>
#include <vector>

namespace xlstm {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

at::ScalarType compute_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Pads the time dimension (dim 2) of a (B, NH, S[, D]) tensor at its end.
at::Tensor pad_time(const at::Tensor& x, int64_t pad, double value) {
  if (pad == 0) return x;
  if (x.dim() == 4) return at::constant_pad_nd(x, {0, 0, 0, pad}, value);
  return at::constant_pad_nd(x, {0, pad}, value);
}

// The inputs cut into N chunks of L steps: (B, NH, N, L, ...). The tail chunk is
// padded with steps that change nothing: no input (log i = -inf) and no decay
// (log f = 0), so the state after the padding equals the state after step S.
struct Chunked {
  at::Tensor q_scaled, k, v;  // (B, NH, N, L, D), compute dtype
  at::Tensor log_i;           // (B, NH, N, L)
  at::Tensor cum_lf;          // (B, NH, N, L): b_t, the within-chunk cumulative log forget
  int64_t S, N, L, pad;
};

Chunked make_chunks(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& i, const at::Tensor& f, int64_t chunk_size) {
  const auto dt = compute_dtype(q);
  const int64_t B = q.size(0), NH = q.size(1), S = q.size(2);
  const int64_t DQK = q.size(3), DV = v.size(3);
  Chunked c;
  c.S = S;
  c.L = std::min<int64_t>(chunk_size, S);
  c.N = (S + c.L - 1) / c.L;
  c.pad = c.N * c.L - S;
  const double scale = 1.0 / std::sqrt(static_cast<double>(DQK));
  c.q_scaled = (pad_time(q.to(dt), c.pad, 0.0) * scale).reshape({B, NH, c.N, c.L, DQK});
  c.k = pad_time(k.to(dt), c.pad, 0.0).reshape({B, NH, c.N, c.L, DQK});
  c.v = pad_time(v.to(dt), c.pad, 0.0).reshape({B, NH, c.N, c.L, DV});
  c.log_i = pad_time(i.to(dt), c.pad, -kInf).reshape({B, NH, c.N, c.L});
  const auto log_f = pad_time(at::log_sigmoid(f.to(dt)), c.pad, 0.0);
  c.cum_lf = log_f.reshape({B, NH, c.N, c.L}).cumsum(-1);
  return c;
}

// (B, NH, N, L, L): log weight b_t - b_j + i_j of column j in row t (j <= t), else -inf.
at::Tensor causal_log_decay(const Chunked& c) {
  const auto causal = at::ones({c.L, c.L}, c.cum_lf.options().dtype(at::kBool)).tril();
  return (c.cum_lf.unsqueeze(-1) - c.cum_lf.unsqueeze(-2) + c.log_i.unsqueeze(-2))
      .masked_fill(causal.logical_not(), -kInf);
}

// The (C, n, m) state entering every chunk, and the state after the last step.
struct ChunkStates {
  at::Tensor c_start, n_start, m_start;  // (B, NH, N, DQK, DV), (B, NH, N, DQK), (B, NH, N)
  at::Tensor c_last, n_last, m_last;     // (B, NH, DQK, DV), (B, NH, DQK), (B, NH)
};

ChunkStates chunk_states(const Chunked& ch, at::Tensor c, at::Tensor n, at::Tensor m) {
  // Log weight of step j in the state at the chunk's end, and its per-chunk max, so
  // each chunk's k v^T sum is formed once, stabilized, outside the sequential loop.
  const auto log_to_end = ch.cum_lf.narrow(-1, ch.L - 1, 1) - ch.cum_lf + ch.log_i;
  const auto chunk_max = std::get<0>(log_to_end.max(-1));                  // (B, NH, N)
  const auto kw = ch.k * (log_to_end - chunk_max.unsqueeze(-1)).exp().unsqueeze(-1);
  const auto kv_sum = at::matmul(kw.transpose(-1, -2), ch.v);             // (B, NH, N, DQK, DV)
  const auto k_sum = kw.sum(-2);                                            // (B, NH, N, DQK)
  const auto chunk_decay = ch.cum_lf.select(-1, ch.L - 1);                  // (B, NH, N)

  std::vector<at::Tensor> cs, ns, ms;
  cs.reserve(ch.N); ns.reserve(ch.N); ms.reserve(ch.N);
  for (int64_t idx = 0; idx < ch.N; ++idx) {
    cs.push_back(c); ns.push_back(n); ms.push_back(m);
    const auto carried = chunk_decay.select(2, idx) + m;
    const auto m_new = at::maximum(carried, chunk_max.select(2, idx));
    const auto keep = (carried - m_new).exp();
    const auto add = (chunk_max.select(2, idx) - m_new).exp();
    c = keep.unsqueeze(-1).unsqueeze(-1) * c + add.unsqueeze(-1).unsqueeze(-1) * kv_sum.select(2, idx);
    n = keep.unsqueeze(-1) * n + add.unsqueeze(-1) * k_sum.select(2, idx);
    m = m_new;
  }
  return {at::stack(cs, 2), at::stack(ns, 2), at::stack(ms, 2), c, n, m};
}

// Initial state in the compute dtype, zeros where not given.
std::tuple<at::Tensor, at::Tensor, at::Tensor> initial_state(
    const at::Tensor& q, const at::Tensor& v,
    const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& n0,
    const std::optional<at::Tensor>& m0) {
  const auto opts = q.options().dtype(compute_dtype(q));
  const int64_t B = q.size(0), NH = q.size(1), DQK = q.size(3), DV = v.size(3);
  auto c = c0.has_value() ? c0->to(opts.dtype()) : at::zeros({B, NH, DQK, DV}, opts);
  auto n = n0.has_value() ? n0->to(opts.dtype()) : at::zeros({B, NH, DQK}, opts);
  auto m = m0.has_value() ? m0->to(opts.dtype()).squeeze(-1) : at::zeros({B, NH}, opts);
  return {c, n, m};
}

// (B, NH, N, L[, D]) -> (B, NH, S[, D]), dropping the padded tail; a fresh
// contiguous tensor (the fake kernels promise contiguous outputs).
at::Tensor unchunk_rows(const at::Tensor& x, int64_t S) {
  return x.flatten(2, 3).narrow(2, 0, S).contiguous();
}

}  // namespace

ForwardOutputs mlstm_chunkwise_forward_aten(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& i, const at::Tensor& f,
    const std::optional<at::Tensor>& c_initial,
    const std::optional<at::Tensor>& n_initial,
    const std::optional<at::Tensor>& m_initial,
    double eps, bool return_last_states, int64_t chunk_size) {
  const auto ch = make_chunks(q, k, v, i, f, chunk_size);
  auto [c0, n0, m0] = initial_state(q, v, c_initial, n_initial, m_initial);
  const auto st = chunk_states(ch, c0, n0, m0);
  const auto log_decay = causal_log_decay(ch);

  // Row stabilizer: the max over the chunk's own columns and the carried state.
  const auto log_state = ch.cum_lf + st.m_start.unsqueeze(-1);            // (B, NH, N, L)
  const auto m = at::maximum(std::get<0>(log_decay.max(-1)), log_state);
  const auto w_state = (log_state - m).exp();
  const auto scores = (log_decay - m.unsqueeze(-1)).exp() *
                      at::matmul(ch.q_scaled, ch.k.transpose(-1, -2));      // (B, NH, N, L, L)
  const auto num = at::matmul(scores, ch.v) +
                   w_state.unsqueeze(-1) * at::matmul(ch.q_scaled, st.c_start);
  const auto norm = scores.sum(-1) + w_state * (ch.q_scaled * st.n_start.unsqueeze(-2)).sum(-1);
  const auto den = at::maximum(norm.abs(), (-m).exp()) + eps;
  const auto h = num / den.unsqueeze(-1);

  ForwardOutputs out;
  out.h = unchunk_rows(h, ch.S).to(q.scalar_type());
  out.m_rows = unchunk_rows(m, ch.S);
  out.norm_rows = unchunk_rows(norm, ch.S);
  if (return_last_states) {
    out.c_last = st.c_last;
    out.n_last = st.n_last;
    out.m_last = st.m_last.unsqueeze(-1);
  } else {
    const auto opts = q.options().dtype(m.scalar_type());
    out.c_last = not_requested_output(opts);
    out.n_last = not_requested_output(opts);
    out.m_last = not_requested_output(opts);
  }
  return out;
}

// Gradient of SPEC §2 (stabilizer m treated as a constant), chunk by chunk.
// Notation: du_t = dh_t / den_t is the gradient of the numerator u_t, db_t the one
// of the signed normalizer b_t (zero where the exp(-m) floor is active). The
// gradient reaching the state at a chunk boundary e is carried backwards as
// dC_e = sum_{t>e} exp(F_t - F_e + m_e - m_t) q_t du_t^T (+ the final-state
// gradient), which is <= 1 in every weight, so no overflow for any gates.
BackwardOutputs mlstm_chunkwise_backward_aten(
    const at::Tensor& dh,
    const std::optional<at::Tensor>& dc_last,
    const std::optional<at::Tensor>& dn_last,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& i, const at::Tensor& f,
    const std::optional<at::Tensor>& c_initial,
    const std::optional<at::Tensor>& n_initial,
    const std::optional<at::Tensor>& m_initial,
    const at::Tensor& h, const at::Tensor& m_rows, const at::Tensor& norm_rows,
    double eps, int64_t chunk_size) {
  const auto dt = compute_dtype(q);
  const int64_t B = q.size(0), NH = q.size(1), S = q.size(2), DQK = q.size(3), DV = v.size(3);
  const auto ch = make_chunks(q, k, v, i, f, chunk_size);
  const int64_t N = ch.N, L = ch.L;
  auto [c0, n0, m0] = initial_state(q, v, c_initial, n_initial, m_initial);
  const auto st = chunk_states(ch, c0, n0, m0);

  // Padded rows get m = +inf, so every weight of theirs is exp(-inf) = 0, and a
  // normalizer of 1, so their denominator is 1 (not 0/0 at eps = 0).
  const auto m = pad_time(m_rows.to(dt), ch.pad, kInf).reshape({B, NH, N, L});
  const auto norm = pad_time(norm_rows.to(dt), ch.pad, 1.0).reshape({B, NH, N, L});
  const auto dh_c = pad_time(dh.to(dt), ch.pad, 0.0).reshape({B, NH, N, L, DV});
  const auto h_c = pad_time(h.to(dt), ch.pad, 0.0).reshape({B, NH, N, L, DV});

  const auto floor = (-m).exp();
  const auto den = at::maximum(norm.abs(), floor) + eps;
  const auto du = dh_c / den.unsqueeze(-1);
  const auto d_den = -(dh_c * h_c).sum(-1) / den;
  const auto db = d_den * norm.sign() * (norm.abs() > floor).to(dt);

  // Within-chunk quadratic part.
  const auto w = (causal_log_decay(ch) - m.unsqueeze(-1)).exp();  // (B, NH, N, L, L)
  const auto qk = at::matmul(ch.q_scaled, ch.k.transpose(-1, -2));
  const auto dp = at::matmul(du, ch.v.transpose(-1, -2)) + db.unsqueeze(-1);
  const auto ds = dp * w;
  const auto dlogw = ds * qk;
  auto dq = at::matmul(ds, ch.k);
  auto dk = at::matmul(ds.transpose(-1, -2), ch.q_scaled);
  auto dv = at::matmul((w * qk).transpose(-1, -2), du);
  auto di = dlogw.sum(-2);
  auto row_sum = dlogw.sum(-1);

  // Rows reading the carried state: u_t += w_state * C^T q_t, b_t += w_state * n.q_t.
  const auto w_state = (ch.cum_lf + st.m_start.unsqueeze(-1) - m).exp();   // (B, NH, N, L)
  const auto state_du = at::matmul(du, st.c_start.transpose(-1, -2)) +
                        db.unsqueeze(-1) * st.n_start.unsqueeze(-2);       // (B, NH, N, L, DQK)
  dq = dq + w_state.unsqueeze(-1) * state_du;
  row_sum = row_sum + w_state * (ch.q_scaled * state_du).sum(-1);

  // Columns feeding later rows: walk the chunks backwards carrying dC, dn.
  const auto opts = q.options().dtype(dt);
  auto dC = (dc_last.has_value() && dc_last->numel() > 0) ? dc_last->to(dt).clone()
                                                          : at::zeros({B, NH, DQK, DV}, opts);
  auto dn = (dn_last.has_value() && dn_last->numel() > 0) ? dn_last->to(dt).clone()
                                                          : at::zeros({B, NH, DQK}, opts);
  // The final state is a virtual last row: its row-sum term enters dF at step S.
  const auto final_row_sum = (st.c_last * dC).sum({-1, -2}) + (st.n_last * dn).sum(-1);
  auto m_end = st.m_last;
  std::vector<at::Tensor> dk_add(N), dv_add(N), di_add(N);
  for (int64_t idx = N - 1; idx >= 0; --idx) {
    const auto b = ch.cum_lf.select(2, idx);                                 // (B, NH, L)
    const auto b_end = b.narrow(-1, L - 1, 1);
    const auto k_c = ch.k.select(2, idx), v_c = ch.v.select(2, idx);
    const auto g = (b_end - b + ch.log_i.select(2, idx) - m_end.unsqueeze(-1)).exp();
    const auto dc_v = at::matmul(v_c, dC.transpose(-1, -2)) + dn.unsqueeze(-2);   // (B, NH, L, DQK)
    dk_add[idx] = g.unsqueeze(-1) * dc_v;
    dv_add[idx] = g.unsqueeze(-1) * at::matmul(k_c, dC);
    di_add[idx] = g * (k_c * dc_v).sum(-1);

    const auto m_start = st.m_start.select(2, idx);
    const auto carry = (b_end.squeeze(-1) + m_start - m_end).exp();
    const auto wq = w_state.select(2, idx).unsqueeze(-1) * ch.q_scaled.select(2, idx);
    dC = at::matmul(wq.transpose(-1, -2), du.select(2, idx)) + carry.unsqueeze(-1).unsqueeze(-1) * dC;
    dn = (wq * db.select(2, idx).unsqueeze(-1)).sum(-2) + carry.unsqueeze(-1) * dn;
    m_end = m_start;
  }
  dk = dk + at::stack(dk_add, 2);
  dv = dv + at::stack(dv_add, 2);
  di = di + at::stack(di_add, 2);

  // d/dF_t = (weights with t as row) - (weights with t as column); F = cumsum(log f).
  auto d_cum = unchunk_rows(row_sum - di, S).clone();
  d_cum.select(2, S - 1).add_(final_row_sum);
  const auto d_log_f = d_cum.flip(-1).cumsum(-1).flip(-1);
  const auto df = (d_log_f * at::sigmoid(-f.to(dt))).contiguous();

  BackwardOutputs out;
  out.dq = (unchunk_rows(dq, S) * (1.0 / std::sqrt(static_cast<double>(DQK)))).to(q.scalar_type());
  out.dk = unchunk_rows(dk, S).to(k.scalar_type());
  out.dv = unchunk_rows(dv, S).to(v.scalar_type());
  out.di = unchunk_rows(di, S).to(i.scalar_type());
  out.df = df.to(f.scalar_type());
  out.dc_initial =
      c_initial.has_value() ? dC.to(c_initial->scalar_type()) : not_requested_output(opts);
  out.dn_initial =
      n_initial.has_value() ? dn.to(n_initial->scalar_type()) : not_requested_output(opts);
  return out;
}

}  // namespace xlstm
