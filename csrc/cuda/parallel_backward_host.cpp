#include "cuda/parallel_backward_host.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <cstdint>

#include "aten/mlstm_chunkwise_aten.h"  // not_requested_output
#include "cuda/kernel_inputs.h"
#include "cuda/state_matmul.h"

namespace xlstm {
namespace {

bool given(const std::optional<at::Tensor>& t) { return t.has_value() && t->numel() > 0; }

const float* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<float>() : nullptr;
}

// The initial state as the backward uses it (docs/semantics.md): row t reads it with
// weight w0_t = exp(F_t + m0 - m_t), adding w0_t q̂_t C0 to the numerator u_t and
// w0_t q̂_t . n0 to the normalizer b_t. Members are undefined when no state was given.
struct InitialState {
  at::Tensor c, n;  // fp32 (B, NH, DQK, DV), (B, NH, DQK)
  at::Tensor w;     // (B, NH, S) fp32: w0_t
  at::Tensor dh_c;  // (B, NH, S, DQK) fp32: dh_t C0^T
  bool given() const { return w.defined(); }
};

InitialState make_initial_state(const at::Tensor& dh, const std::optional<at::Tensor>& c0,
                                const std::optional<at::Tensor>& n0,
                                const std::optional<at::Tensor>& m0, const at::Tensor& fcum,
                                const at::Tensor& m) {
  InitialState st;
  st.c = state_fp32(c0);
  st.n = state_fp32(n0);
  if (!st.c.defined() && !st.n.defined()) return st;
  const at::Tensor m0d =
      m0.has_value() ? m0->to(at::kDouble) : at::zeros_like(fcum.narrow(-1, 0, 1));
  st.w = (fcum + m0d - m.to(at::kDouble)).exp().to(at::kFloat);
  if (st.c.defined()) st.dh_c = matmul_f32(dh, st.c.transpose(-1, -2), dh.scalar_type());
  return st;
}

// q̂_t . x_t per row, fp32: (B, NH, S).
at::Tensor scaled_row_dot(const at::Tensor& q, const at::Tensor& x, double scale) {
  return (x * q).sum(-1) * scale;
}

// Initial-state terms of the gradient: fp32 addend of dq, the state column's share of
// the dF row sums, and the gradient reaching (C0, n0) from the rows.
struct InitialTerms {
  at::Tensor dq_add;   // (B, NH, S, DQK)
  at::Tensor row_add;  // (B, NH, S)
  at::Tensor dc, dn;   // (B, NH, DQK, DV), (B, NH, DQK); undefined where C0 / n0 are
};

InitialTerms initial_state_terms(const InitialState& st, const at::Tensor& q,
                                 const at::Tensor& dh, const at::Tensor& rden,
                                 const at::Tensor& db, double scale) {
  InitialTerms t;
  // d u_t = dh_t rden_t, d b_t = db_t: dq_t gets w0_t (C0 du_t + n0 db_t) scale.
  at::Tensor g;
  if (st.c.defined()) g = st.dh_c * (st.w * rden).unsqueeze(-1);
  if (st.n.defined()) {
    const at::Tensor gn = (st.w * db).unsqueeze(-1) * st.n.unsqueeze(-2);
    g = g.defined() ? g + gn : gn;
  }
  t.dq_add = g * scale;
  t.row_add = (q * t.dq_add).sum(-1);  // q̂_t . w0_t (C0 du_t + n0 db_t)
  // dC0 = sum_t w0_t q̂_t du_t^T, dn0 = sum_t w0_t q̂_t db_t.
  if (st.c.defined()) {
    const at::Tensor qw = q * (st.w * rden * scale).unsqueeze(-1);
    t.dc = matmul_f32(qw.transpose(-1, -2), dh, dh.scalar_type());
  }
  if (st.n.defined()) {
    t.dn = at::matmul((st.w * db * scale).unsqueeze(-2), q.to(at::kFloat)).squeeze(-2);
  }
  return t;
}

// Final-state terms: the final state is a virtual row at t = S with weights
// g_j = exp(F_S - F_j + i_j - m_S) on the columns and g0 = exp(F_S + m0 - m_S) on the
// initial state.
struct FinalTerms {
  at::Tensor dk_add, dv_add;  // (B, NH, S, D) fp32 or undefined
  at::Tensor di_add;          // (B, NH, S)
  at::Tensor last_row_add;    // (B, NH): into dF at t = S
  at::Tensor g0;              // (B, NH) fp32
};

FinalTerms final_state_terms(const at::Tensor& dcS, const at::Tensor& dnS, const at::Tensor& k,
                             const at::Tensor& v, const at::Tensor& ig, const at::Tensor& fcum,
                             const at::Tensor& m_final, const std::optional<at::Tensor>& m0,
                             const InitialState& init) {
  FinalTerms t;
  const int64_t S = k.size(2);
  const at::Tensor FS = fcum.narrow(-1, S - 1, 1);
  const at::Tensor mS = m_final.to(at::kDouble);
  const at::Tensor gj =
      (FS - fcum + ig.to(at::kDouble) - mS).exp().to(at::kFloat).unsqueeze(-1);
  at::Tensor dk_fin;  // dC_S v_j + dn_S
  if (dcS.defined()) dk_fin = matmul_f32(v, dcS.transpose(-1, -2), v.scalar_type());
  if (dnS.defined()) dk_fin = dk_fin.defined() ? dk_fin + dnS.unsqueeze(-2)
                                               : dnS.unsqueeze(-2).expand({-1, -1, S, -1});
  t.dk_add = gj * dk_fin;
  if (dcS.defined()) t.dv_add = gj * matmul_f32(k, dcS, k.scalar_type());
  t.di_add = (k * t.dk_add).sum(-1);
  const at::Tensor m0d = m0.has_value() ? m0->to(at::kDouble) : at::zeros_like(mS);
  t.g0 = (FS + m0d - mS).exp().to(at::kFloat).squeeze(-1);
  at::Tensor last = t.di_add.sum(-1);
  if (dcS.defined() && init.c.defined()) last = last + t.g0 * (init.c * dcS).sum({-1, -2});
  if (dnS.defined() && init.n.defined()) last = last + t.g0 * (init.n * dnS).sum(-1);
  t.last_row_add = last;
  return t;
}

at::Tensor add_defined(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a + b;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
run_parallel_backward(const at::Tensor& dh_in, const std::optional<at::Tensor>& dc_last,
                      const std::optional<at::Tensor>& dn_last, const at::Tensor& q_in,
                      const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& i,
                      const at::Tensor& f, const std::optional<at::Tensor>& c0,
                      const std::optional<at::Tensor>& n0, const std::optional<at::Tensor>& m0,
                      const at::Tensor& m_rows, double eps, BackwardLauncher launch,
                      const ChunkedBackward* chunked) {
  const int64_t B = q_in.size(0), NH = q_in.size(1), S = q_in.size(2);
  const int64_t DQK = q_in.size(3), DV = v_in.size(3);
  c10::cuda::CUDAGuard device_guard(q_in.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const double scale = 1.0 / std::sqrt(static_cast<double>(DQK));

  const at::Tensor q = vector_aligned(q_in), k = vector_aligned(k_in), v = vector_aligned(v_in);
  const at::Tensor dh = vector_aligned(dh_in.to(q_in.scalar_type()));
  const at::Tensor ig = i.to(at::kFloat).contiguous();
  const at::Tensor fcum = at::cumsum(at::log_sigmoid(f.to(at::kDouble)), -1).contiguous();
  const at::Tensor m = m_rows.to(at::kFloat).contiguous();

  at::Tensor dq = at::empty({B, NH, S, DQK}, q_in.options());
  at::Tensor dk = at::empty({B, NH, S, DQK}, k_in.options());
  at::Tensor dv = at::empty({B, NH, S, DV}, v_in.options());
  at::Tensor di = at::empty({B, NH, S}, m.options());
  at::Tensor rowsum = at::empty({B, NH, S}, m.options());

  MlstmBackwardParams p;
  p.q_ptr = q.data_ptr(); p.k_ptr = k.data_ptr(); p.v_ptr = v.data_ptr(); p.dh_ptr = dh.data_ptr();
  p.q_batch_stride = q.stride(0); p.q_head_stride = q.stride(1); p.q_row_stride = q.stride(2);
  p.k_batch_stride = k.stride(0); p.k_head_stride = k.stride(1); p.k_row_stride = k.stride(2);
  p.v_batch_stride = v.stride(0); p.v_head_stride = v.stride(1); p.v_row_stride = v.stride(2);
  p.dh_batch_stride = dh.stride(0); p.dh_head_stride = dh.stride(1); p.dh_row_stride = dh.stride(2);
  p.dq_ptr = dq.data_ptr(); p.dk_ptr = dk.data_ptr(); p.dv_ptr = dv.data_ptr();
  p.fcum_ptr = fcum.data_ptr<double>(); p.igate_ptr = ig.data_ptr<float>();
  p.m_ptr = m.data_ptr<float>();
  p.di_ptr = di.data_ptr<float>(); p.rowsum_ptr = rowsum.data_ptr<float>();
  p.B = B; p.NH = NH; p.S = S;
  p.DQK = static_cast<int>(DQK); p.DV = static_cast<int>(DV);
  p.scale = static_cast<float>(scale);
  p.is_bf16 = q.scalar_type() == at::kBFloat16;

  // The normalizer b_t and dh_t . u_t (u the unrounded numerator) with the backward's own
  // weights: quadratic part from the kernels, initial-state part here. Then
  // den_t = max(|b_t|, exp(-m_t)) + eps (a NaN b stays NaN) and
  // db_t = -(dh_t . h_t) / den_t * sign(b_t) [floor inactive], dh_t . h_t = dh_t . u_t / den_t.
  // Recomputing b (instead of the forward's norm_rows) keeps db consistent with the
  // weights of this pass: where the normalizer's gradient cancels the numerator's
  // (one dominant column, extreme gates), a 1e-3 mismatch would not cancel.
  at::Tensor dhu = at::empty({B, NH, S}, m.options());
  at::Tensor bsum = at::empty({B, NH, S}, m.options());
  p.dhu_ptr = dhu.data_ptr<float>();
  p.bsum_ptr = bsum.data_ptr<float>();
  launch(p, BackwardPass::kRowDotProducts, stream);
  const InitialState init = make_initial_state(dh, c0, n0, m0, fcum, m);
  if (init.c.defined()) dhu = dhu + init.w * scaled_row_dot(q, init.dh_c, scale);
  if (init.n.defined()) bsum = bsum + init.w * scaled_row_dot(q, init.n.unsqueeze(-2), scale);
  const at::Tensor floor = (-m).exp();
  const at::Tensor absb = bsum.abs();
  const at::Tensor den = at::where(absb.isnan(), absb, at::maximum(absb, floor)) + eps;
  at::Tensor rden = den.reciprocal();
  const at::Tensor active_sign = bsum.sign() * (absb > floor).to(at::kFloat);
  at::Tensor db = -dhu * rden * rden * active_sign;
  if (chunked != nullptr && chunked->row_valid.defined()) {
    rden = at::where(chunked->row_valid, rden, 0.f);
    db = at::where(chunked->row_valid, db, 0.f);
  }
  rden = rden.contiguous();
  db = db.contiguous();
  p.rden_ptr = rden.data_ptr<float>();
  p.db_ptr = db.data_ptr<float>();

  InitialTerms init_terms;
  if (init.given()) init_terms = initial_state_terms(init, q, dh, rden, db, scale);
  at::Tensor dcS = given(dc_last) ? dc_last->to(at::kFloat) : at::Tensor();
  at::Tensor dnS = given(dn_last) ? dn_last->to(at::kFloat) : at::Tensor();
  if (chunked != nullptr) {
    TORCH_CHECK(init_terms.dc.defined() && init_terms.dn.defined(),
                "xlstm: internal error: the chunked backward needs both initial states");
    std::tie(dcS, dnS) = chunked->final_state_grads(init_terms.dc, init_terms.dn);
  }
  FinalTerms fin;
  if (dcS.defined() || dnS.defined()) {
    const at::Tensor m_final =
        chunked != nullptr ? chunked->m_final : m.narrow(-1, S - 1, 1);
    fin = final_state_terms(dcS, dnS, k, v, ig, fcum, m_final, m0, init);
  }

  const at::Tensor dq_add = init_terms.dq_add.defined() ? init_terms.dq_add.contiguous()
                                                        : at::Tensor();
  const at::Tensor dk_add = fin.dk_add.defined() ? fin.dk_add.contiguous() : at::Tensor();
  const at::Tensor dv_add = fin.dv_add.defined() ? fin.dv_add.contiguous() : at::Tensor();
  p.dq_add_ptr = ptr_or_null(dq_add);
  p.dk_add_ptr = ptr_or_null(dk_add);
  p.dv_add_ptr = ptr_or_null(dv_add);
  launch(p, BackwardPass::kGradients, stream);

  // dF_t = (row sums of dlogw, state column included) - (column sums, final row included).
  if (fin.di_add.defined()) di = di + fin.di_add;
  at::Tensor d_cum = rowsum.to(at::kDouble) - di.to(at::kDouble);
  if (init_terms.row_add.defined()) d_cum = d_cum + init_terms.row_add.to(at::kDouble);
  if (fin.last_row_add.defined()) {
    d_cum.select(-1, S - 1).add_(fin.last_row_add.to(at::kDouble));
  }
  const at::Tensor d_log_f = d_cum.flip(-1).cumsum(-1).flip(-1);
  const at::Tensor df =
      (d_log_f * at::sigmoid(-f.to(at::kDouble))).to(f.scalar_type()).contiguous();

  const auto opts = m.options();
  at::Tensor dc0 = not_requested_output(opts), dn0 = not_requested_output(opts);
  if (chunked == nullptr && c0.has_value()) {
    const at::Tensor carried =
        dcS.defined() ? fin.g0.unsqueeze(-1).unsqueeze(-1) * dcS : at::Tensor();
    dc0 = add_defined(init_terms.dc, carried);
    dc0 = (dc0.defined() ? dc0 : at::zeros_like(init.c)).to(c0->scalar_type());
  }
  if (chunked == nullptr && n0.has_value()) {
    const at::Tensor carried = dnS.defined() ? fin.g0.unsqueeze(-1) * dnS : at::Tensor();
    dn0 = add_defined(init_terms.dn, carried);
    dn0 = (dn0.defined() ? dn0 : at::zeros_like(init.n)).to(n0->scalar_type());
  }
  return {dq, dk, dv, di.to(i.scalar_type()).contiguous(), df, dc0, dn0};
}

}  // namespace xlstm
