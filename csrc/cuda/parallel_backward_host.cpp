#include "cuda/parallel_backward_host.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <cstdint>

#include "aten/mlstm_chunkwise_aten.h"  // not_requested_output
#include "cuda/kernel_inputs.h"

namespace xlstm {
namespace {

bool given(const std::optional<at::Tensor>& t) { return t.has_value() && t->numel() > 0; }

// Row t reads the initial state with weight w0_t = exp(F_t + m0 - m_t): (B, NH, S) fp32.
at::Tensor initial_state_weights(const at::Tensor& fcum, const at::Tensor& m,
                                 const std::optional<at::Tensor>& m0) {
  const at::Tensor m0d =
      m0.has_value() ? m0->to(at::kDouble) : at::zeros_like(fcum.narrow(-1, 0, 1));
  return (fcum + m0d - m.to(at::kDouble)).exp().to(at::kFloat);
}

// Terms of the gradient that involve the initial or the final state (see
// docs/semantics.md): fp32 addends of dq, dk, dv, and contributions to dI and dF.
struct StateTerms {
  at::Tensor dq_add, dk_add, dv_add;  // (B, NH, S, D) fp32 or undefined
  at::Tensor di_add;                  // (B, NH, S) or undefined
  at::Tensor row_add;                 // (B, NH, S) or undefined: into dF_t
  at::Tensor last_row_add;            // (B, NH) or undefined: into dF at t = S
  at::Tensor dc0, dn0;                // fp32 or undefined
};

StateTerms state_terms(const at::Tensor& dh, const std::optional<at::Tensor>& dc_last,
                       const std::optional<at::Tensor>& dn_last, const at::Tensor& q,
                       const at::Tensor& k, const at::Tensor& v, const at::Tensor& ig,
                       const at::Tensor& fcum, const at::Tensor& m,
                       const std::optional<at::Tensor>& c0_in,
                       const std::optional<at::Tensor>& n0_in,
                       const std::optional<at::Tensor>& m0_in, const at::Tensor& rden,
                       const at::Tensor& db, double scale) {
  StateTerms st;
  const at::Tensor c0 = state_fp32(c0_in), n0 = state_fp32(n0_in);
  const bool has_init = c0.defined() || n0.defined();
  const bool has_final = given(dc_last) || given(dn_last);
  if (!has_init && !has_final) return st;
  const at::Tensor m0 = m0_in.has_value() ? m0_in->to(at::kDouble)
                                           : at::zeros_like(fcum.narrow(-1, 0, 1));
  const at::Tensor qs = q.to(at::kFloat) * scale;  // q̂

  if (has_init) {
    const at::Tensor w0 = initial_state_weights(fcum, m, m0_in);
    const at::Tensor du = dh.to(at::kFloat) * rden.unsqueeze(-1);
    at::Tensor g = at::zeros_like(qs);  // C0 du_t + n0 db_t
    if (c0.defined()) g = g + at::matmul(du, c0.transpose(-1, -2));
    if (n0.defined()) g = g + db.unsqueeze(-1) * n0.unsqueeze(-2);
    st.dq_add = (w0.unsqueeze(-1) * g) * scale;
    st.row_add = (q.to(at::kFloat) * st.dq_add).sum(-1);  // q̂ . w0 g
    const at::Tensor wq = qs * w0.unsqueeze(-1);
    if (c0.defined()) st.dc0 = at::matmul(wq.transpose(-1, -2), du);
    if (n0.defined()) st.dn0 = (wq * db.unsqueeze(-1)).sum(-2);
  }
  if (has_final) {
    // The final state is a virtual row at t = S with weights
    // g_j = exp(F_S - F_j + i_j - m_S) on the columns and g0 = exp(F_S + m0 - m_S).
    const int64_t S = q.size(2);
    const at::Tensor dcS = given(dc_last) ? dc_last->to(at::kFloat) : at::Tensor();
    const at::Tensor dnS = given(dn_last) ? dn_last->to(at::kFloat) : at::Tensor();
    const at::Tensor FS = fcum.narrow(-1, S - 1, 1);
    const at::Tensor mS = m.narrow(-1, S - 1, 1).to(at::kDouble);
    const at::Tensor gj = (FS - fcum + ig.to(at::kDouble) - mS).exp().to(at::kFloat).unsqueeze(-1);
    const at::Tensor kf = k.to(at::kFloat);
    at::Tensor dk_fin = at::zeros_like(kf);  // dC_S v_j + dn_S
    if (dcS.defined()) dk_fin = dk_fin + at::matmul(v.to(at::kFloat), dcS.transpose(-1, -2));
    if (dnS.defined()) dk_fin = dk_fin + dnS.unsqueeze(-2);
    dk_fin = gj * dk_fin;
    st.dk_add = dk_fin;
    if (dcS.defined()) st.dv_add = gj * at::matmul(kf, dcS);
    st.di_add = (kf * dk_fin).sum(-1);
    const at::Tensor g0 = (FS + m0 - mS).exp().to(at::kFloat).squeeze(-1);  // (B, NH)
    at::Tensor last = st.di_add.sum(-1);
    if (dcS.defined() && c0.defined()) last = last + g0 * (c0 * dcS).sum({-1, -2});
    if (dnS.defined() && n0.defined()) last = last + g0 * (n0 * dnS).sum(-1);
    st.last_row_add = last;
    if (c0.defined()) {
      const at::Tensor add =
          dcS.defined() ? g0.unsqueeze(-1).unsqueeze(-1) * dcS : at::zeros_like(c0);
      st.dc0 = st.dc0.defined() ? st.dc0 + add : add;
    }
    if (n0.defined()) {
      const at::Tensor add = dnS.defined() ? g0.unsqueeze(-1) * dnS : at::zeros_like(n0);
      st.dn0 = st.dn0.defined() ? st.dn0 + add : add;
    }
  }
  return st;
}

const float* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<float>() : nullptr;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
run_parallel_backward(const at::Tensor& dh_in, const std::optional<at::Tensor>& dc_last,
                      const std::optional<at::Tensor>& dn_last, const at::Tensor& q_in,
                      const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& i,
                      const at::Tensor& f, const std::optional<at::Tensor>& c0,
                      const std::optional<at::Tensor>& n0, const std::optional<at::Tensor>& m0,
                      const at::Tensor& h_in, const at::Tensor& m_rows,
                      const at::Tensor& norm_rows, double eps, BackwardLauncher launch) {
  const int64_t B = q_in.size(0), NH = q_in.size(1), S = q_in.size(2);
  const int64_t DQK = q_in.size(3), DV = v_in.size(3);
  c10::cuda::CUDAGuard device_guard(q_in.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const double scale = 1.0 / std::sqrt(static_cast<double>(DQK));

  const at::Tensor q = vector_aligned(q_in), k = vector_aligned(k_in), v = vector_aligned(v_in);
  const at::Tensor dh = vector_aligned(dh_in.to(q_in.scalar_type()));
  (void)h_in;  // dh . h is recomputed from the unrounded numerator (pass kRowDotProducts)
  const at::Tensor ig = i.to(at::kFloat).contiguous();
  const at::Tensor fcum = at::cumsum(at::log_sigmoid(f.to(at::kDouble)), -1).contiguous();
  const at::Tensor m = m_rows.to(at::kFloat).contiguous();
  (void)norm_rows;  // b_t is recomputed with this pass's weights (see below)

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
  if (c0.has_value() || n0.has_value()) {
    const at::Tensor w0 = initial_state_weights(fcum, m, m0);
    const at::Tensor qs = q.to(at::kFloat) * scale;
    if (c0.has_value()) {
      const at::Tensor c0_dh = at::matmul(dh.to(at::kFloat), state_fp32(c0).transpose(-1, -2));
      dhu = dhu + w0 * (c0_dh * qs).sum(-1);
    }
    if (n0.has_value()) bsum = bsum + w0 * (qs * state_fp32(n0).unsqueeze(-2)).sum(-1);
  }
  const at::Tensor floor = (-m).exp();
  const at::Tensor absb = bsum.abs();
  const at::Tensor den = at::where(absb.isnan(), absb, at::maximum(absb, floor)) + eps;
  const at::Tensor rden = den.reciprocal().contiguous();
  const at::Tensor active_sign = bsum.sign() * (absb > floor).to(at::kFloat);
  const at::Tensor db = (-dhu * rden * rden * active_sign).contiguous();
  p.rden_ptr = rden.data_ptr<float>();
  p.db_ptr = db.data_ptr<float>();

  const StateTerms st = state_terms(dh, dc_last, dn_last, q, k, v, ig, fcum, m, c0, n0, m0,
                                    rden, db, scale);
  const at::Tensor dq_add = st.dq_add.defined() ? st.dq_add.contiguous() : at::Tensor();
  const at::Tensor dk_add = st.dk_add.defined() ? st.dk_add.contiguous() : at::Tensor();
  const at::Tensor dv_add = st.dv_add.defined() ? st.dv_add.contiguous() : at::Tensor();
  p.dq_add_ptr = ptr_or_null(dq_add);
  p.dk_add_ptr = ptr_or_null(dk_add);
  p.dv_add_ptr = ptr_or_null(dv_add);
  launch(p, BackwardPass::kGradients, stream);

  // dF_t = (row sums of dlogw, state column included) - (column sums, final row included).
  if (st.di_add.defined()) di = di + st.di_add;
  at::Tensor d_cum = rowsum.to(at::kDouble) - di.to(at::kDouble);
  if (st.row_add.defined()) d_cum = d_cum + st.row_add.to(at::kDouble);
  if (st.last_row_add.defined()) {
    d_cum.select(-1, S - 1).add_(st.last_row_add.to(at::kDouble));
  }
  const at::Tensor d_log_f = d_cum.flip(-1).cumsum(-1).flip(-1);
  const at::Tensor df =
      (d_log_f * at::sigmoid(-f.to(at::kDouble))).to(f.scalar_type()).contiguous();

  const auto opts = m.options();
  at::Tensor dc0 = c0.has_value() ? st.dc0.to(c0->scalar_type()) : not_requested_output(opts);
  at::Tensor dn0 = n0.has_value() ? st.dn0.to(n0->scalar_type()) : not_requested_output(opts);
  return {dq, dk, dv, di.to(i.scalar_type()).contiguous(), df, dc0, dn0};
}

}  // namespace xlstm
