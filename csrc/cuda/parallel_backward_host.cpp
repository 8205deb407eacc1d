#include "cuda/parallel_backward_host.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <cstdint>

#include "aten/mlstm_chunkwise_aten.h"  // not_requested_output
#include "cuda/gate_prefix.h"
#include "cuda/kernel_inputs.h"
#include "cuda/normalizer_grad.h"
#include "cuda/state_gemm.h"
#include "sm90/mlstm_bwd_sm90_api.h"  // mlstm_bwd_sm90_forms_normalizer_terms

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
  at::Tensor c, n;        // fp32 (B, NH, DQK, DV), (B, NH, DQK)
  at::Tensor w;           // (B, NH, S) fp32: w0_t
  at::Tensor dh_c;        // (B, NH, S, DQK) fp32: dh_t C0^T (undefined without C0, or
                          // where the kernels form it: then c_lowp, c_factor are set)
  at::Tensor c_lowp, c_factor;  // state_for_tensor_cores(C0, split)
  at::Tensor q_dh_c, q_n; // (B, NH, S) fp32: q_t . dh_c_t and q_t . n0 (0 where absent);
                          // with c_lowp, q_dh_c is written by the kernels' row pass
  bool given() const { return w.defined(); }
};

InitialState make_initial_state(const at::Tensor& dh, const at::Tensor& q,
                                const std::optional<at::Tensor>& c0,
                                const std::optional<at::Tensor>& n0,
                                const std::optional<at::Tensor>& m0, const at::Tensor& fcum,
                                const at::Tensor& m, bool state_on_tensor_cores) {
  InitialState st;
  st.c = state_fp32(c0);
  st.n = state_fp32(n0);
  if (!st.c.defined() && !st.n.defined()) return st;
  const auto dt = q.scalar_type();
  const at::Tensor m0d =
      m0.has_value() ? m0->to(at::kDouble) : at::zeros_like(fcum.narrow(-1, 0, 1));
  st.w = (fcum + m0d - m.to(at::kDouble)).exp().to(at::kFloat);
  if (st.c.defined() && state_on_tensor_cores) {
    std::tie(st.c_lowp, st.c_factor) = state_for_tensor_cores(st.c, dt, 1.0, /*split=*/true);
    st.q_dh_c = at::empty_like(st.w);
    st.q_n = row_dots(q, at::Tensor(), st.n).second;
  } else if (st.c.defined()) {  // dh_t C0^T, q_t . (dh_t C0^T), q_t . n0
    StateRowProduct r = rows_times_state(dh, st.c, /*transpose_state=*/true, 1.0,
                                         /*split=*/true, dt, q, st.n);
    st.dh_c = r.out;
    st.q_dh_c = r.dot_x;
    st.q_n = r.dot_y;
  } else {
    std::tie(st.q_dh_c, st.q_n) = row_dots(q, at::Tensor(), st.n);
  }
  return st;
}

// Initial-state terms of the gradient: the dq addend, the state column's share of the
// dF row sums, and the gradient reaching (C0, n0) from the rows.
struct InitialTerms {
  at::Tensor dq_x_scale, dq_y_scale;  // (B, NH, S): dq_t += x_scale dh_c_t + y_scale n0
  at::Tensor row_add;                 // (B, NH, S)
  at::Tensor dc, dn;                  // (B, NH, DQK, DV), (B, NH, DQK); undefined where C0 / n0 are
};

InitialTerms initial_state_terms(const InitialState& st, const at::Tensor& q,
                                 const at::Tensor& dh, const at::Tensor& rden,
                                 const at::Tensor& db, double scale) {
  // d u_t = dh_t rden_t, d b_t = db_t: dq_t gets scale w0_t (C0 du_t + n0 db_t), whose
  // dot with q_t is the state column's row sum for dF.
  const auto dt = q.scalar_type();
  InitialTerms t;
  t.dq_x_scale = (st.w * rden * scale).contiguous();
  t.dq_y_scale = (st.w * db * scale).contiguous();
  t.row_add = t.dq_x_scale * st.q_dh_c + t.dq_y_scale * st.q_n;
  // dC0 = sum_t scale w0_t rden_t q_t dh_t^T, dn0 = sum_t scale w0_t db_t q_t.
  if (st.c.defined()) {
    t.dc = weighted_outer_sum(q, t.dq_x_scale, dh, dt, /*want_row_sum=*/false).first;
  }
  if (st.n.defined()) {
    t.dn = gemm_f32(gemm_operand(t.dq_y_scale.unsqueeze(-2), dt), gemm_operand(q, dt))
               .squeeze(-2);
  }
  return t;
}

// Final-state terms: the final state is a virtual row at t = S with weights
// g_j = exp(F_S - F_j + i_j - m_S) on the columns and g0 = exp(F_S + m0 - m_S) on the
// initial state: dk_j += g_j (dC_S v_j + dn_S), dv_j += g_j dC_S^T k_j.
struct FinalTerms {
  at::Tensor g;             // (B, NH, S) fp32: g_j, the row scale of both addends
  at::Tensor dk_x, dv_x;    // (B, NH, S, D) fp32: v_j dC_S^T, k_j dC_S (undefined without
                            // dC_S, or where the kernels form them from dc_lowp)
  at::Tensor dc_lowp, dc_factor;  // state_for_tensor_cores(dC_S, split)
  // dI's addend g_j k_j . (dC_S v_j + dn_S): either from the row dots k_dkx, k_dn here,
  // or, with dc_lowp, from the kernels (k_dk_state: partial dots per 128 columns of dk,
  // MlstmBackwardParams::k_dk_state_ptr).
  at::Tensor k_dkx, k_dn, k_dk_state;
  at::Tensor di_add;        // (B, NH, S), by finish_final_terms after the kernels
  at::Tensor last_row_add;  // (B, NH): into dF at t = S, likewise
  at::Tensor g0;            // (B, NH) fp32
};

FinalTerms final_state_terms(const at::Tensor& dcS, const at::Tensor& dnS, const at::Tensor& k,
                             const at::Tensor& v, const at::Tensor& ig, const at::Tensor& fcum,
                             const at::Tensor& m_final, const std::optional<at::Tensor>& m0,
                             const InitialState& init, bool state_on_tensor_cores) {
  const auto dt = k.scalar_type();
  FinalTerms t;
  const int64_t S = k.size(2);
  const at::Tensor FS = fcum.narrow(-1, S - 1, 1);
  const at::Tensor mS = m_final.to(at::kDouble);
  t.g = (FS - fcum + ig.to(at::kDouble) - mS).exp().to(at::kFloat).contiguous();
  if (dcS.defined() && state_on_tensor_cores) {
    std::tie(t.dc_lowp, t.dc_factor) = state_for_tensor_cores(dcS, dt, 1.0, /*split=*/true);
    const int64_t dk_chunks = (k.size(3) + 127) / 128;
    t.k_dk_state = at::empty({dk_chunks, k.size(0), k.size(1), S}, t.g.options());
  } else if (dcS.defined()) {
    // dk_x also feeds dI through k . dk_x: dC_S split into hi + lo. dv_x feeds dv only.
    StateRowProduct r = rows_times_state(v, dcS, /*transpose_state=*/true, 1.0,
                                         /*split=*/true, dt, k, dnS);
    t.dk_x = r.out;
    t.k_dkx = r.dot_x;
    t.k_dn = r.dot_y;
    t.dv_x = rows_times_state(k, dcS, /*transpose_state=*/false, 1.0, /*split=*/false, dt).out;
  } else {
    std::tie(t.k_dkx, t.k_dn) = row_dots(k, at::Tensor(), dnS);
  }
  const at::Tensor m0d = m0.has_value() ? m0->to(at::kDouble) : at::zeros_like(mS);
  t.g0 = (FS + m0d - mS).exp().to(at::kFloat).squeeze(-1);
  return t;
}

// The final state's dI addend and its dF row at t = S, once the kernels have run.
void finish_final_terms(FinalTerms& t, const at::Tensor& dcS, const at::Tensor& dnS,
                        const InitialState& init) {
  t.di_add = t.k_dk_state.defined() ? t.k_dk_state.sum(0) : t.g * (t.k_dkx + t.k_dn);
  at::Tensor last = t.di_add.sum(-1);
  if (dcS.defined() && init.c.defined()) last = last + t.g0 * (init.c * dcS).sum({-1, -2});
  if (dnS.defined() && init.n.defined()) last = last + t.g0 * (init.n * dnS).sum(-1);
  t.last_row_add = last;
}

at::Tensor contiguous_if_defined(const at::Tensor& t) {
  return t.defined() ? t.contiguous() : t;
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
                      const at::Tensor& m_rows, const at::Tensor& h,
                      const at::Tensor& norm_rows, double eps, BackwardLauncher launch,
                      bool state_on_tensor_cores, const ChunkedBackward* chunked) {
  const int64_t B = q_in.size(0), NH = q_in.size(1), S = q_in.size(2);
  const int64_t DQK = q_in.size(3), DV = v_in.size(3);
  c10::cuda::CUDAGuard device_guard(q_in.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const double scale = 1.0 / std::sqrt(static_cast<double>(DQK));

  const at::Tensor q = vector_aligned(q_in), k = vector_aligned(k_in), v = vector_aligned(v_in);
  const at::Tensor dh = vector_aligned(dh_in.to(q_in.scalar_type()));
  const at::Tensor ig = i.to(at::kFloat).contiguous();
  const at::Tensor fcum = gate_prefix(f, ig, at::Tensor(), /*want_m=*/false).fcum;
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
  const at::Tensor work_counters =
      at::zeros({kNumWorkCounters}, at::TensorOptions().dtype(at::kInt).device(q.device()));
  p.work_counters = work_counters.data_ptr<int>();

  // The normalizer b_t and dh_t . u_t (u the unrounded numerator) give rden_t and db_t
  // (normalizer_terms.h). The kernels' row pass
  // recomputes b and u with this pass's own weights (quadratic part; the initial state's
  // part is added here): where the normalizer's gradient cancels the numerator's (one
  // dominant column, extreme gates), a 1e-3 mismatch would not cancel. Without C0 and
  // for S > kForwardRowsMinLength, b_t and dh_t . u_t come from the forward's outputs
  // instead, except for the sequences with large gate terms (normalizer_grad.h): the row
  // pass runs for those only (sm90: over a device-side list; sm80 / sm75: the blocks of
  // the other sequences return at once). With C0 it runs for all: the sm90 row pass also
  // forms q_t . (dh_t C0^T), and the other families' state terms were validated with it.
  const InitialState init = make_initial_state(dh, q, c0, n0, m0, fcum, m, state_on_tensor_cores);
  // (mlstm_backward has checked h's and norm_rows' shapes.)
  const bool forward_rows = chunked == nullptr && !init.c.defined() &&
                            S > kForwardRowsMinLength && h.defined() &&
                            h.scalar_type() == dh.scalar_type() && norm_rows.defined();
  RowPassSequences row_pass;
  if (forward_rows) {
    row_pass = row_pass_sequences(ig, fcum, state_fp32(m0));
    p.row_pass_seqs = row_pass.list.data_ptr<int>();
    p.row_pass_count = row_pass.count.data_ptr<int>();
    p.row_pass_flags = row_pass.flags.data_ptr<int>();
  }
  at::Tensor dhu = at::empty({B, NH, S}, m.options());
  at::Tensor bsum = at::empty({B, NH, S}, m.options());
  p.dhu_ptr = dhu.data_ptr<float>();
  p.bsum_ptr = bsum.data_ptr<float>();
  if (init.c_lowp.defined()) {  // the row pass also forms q_t . (dh_t C0^T)
    p.c_lowp = init.c_lowp.data_ptr();
    p.c_factor = ptr_or_null(init.c_factor);
    p.q_dh_c_ptr = init.q_dh_c.data_ptr<float>();
  }
  launch(p, BackwardPass::kRowDotProducts, stream);
  p.row_pass_seqs = p.row_pass_count = p.row_pass_flags = nullptr;
  if (init.given()) {
    dhu = dhu + init.w * init.q_dh_c * scale;
    bsum = bsum + init.w * init.q_n * scale;
  }
  at::Tensor rden, db;
  // The sm90 family (state_on_tensor_cores) forms the forward-row terms in its dq kernel,
  // from the h tiles it loads next to dh (MlstmBackwardParams::fwd_h_ptr), where they fit
  // its shared memory: one pass over dh and h less. h's TMA descriptor needs 16-byte
  // aligned rows.
  const bool norm_terms_in_kernel =
      forward_rows && state_on_tensor_cores &&
      mlstm_bwd_sm90_forms_normalizer_terms(static_cast<int>(DQK), static_cast<int>(DV));
  at::Tensor h_for_kernel, norm_rows_f32;
  if (norm_terms_in_kernel) {
    h_for_kernel = vector_aligned(h);
    norm_rows_f32 = norm_rows.to(at::kFloat).contiguous();
    rden = at::empty_like(m);
    db = at::empty_like(m);
    p.fwd_h_ptr = h_for_kernel.data_ptr();
    p.fwd_h_batch_stride = h_for_kernel.stride(0);
    p.fwd_h_head_stride = h_for_kernel.stride(1);
    p.fwd_h_row_stride = h_for_kernel.stride(2);
    p.norm_rows_ptr = norm_rows_f32.data_ptr<float>();
    p.row_pass_flags = row_pass.flags.data_ptr<int>();
    p.eps = static_cast<float>(eps);
  } else if (forward_rows) {
    std::tie(rden, db) = normalizer_grad(dh, h, norm_rows.to(at::kFloat).contiguous(), m, eps,
                                         row_pass, dhu, bsum);
  } else {
    std::tie(rden, db) =
        normalizer_grad_from_row_pass(dhu.contiguous(), bsum.contiguous(), m, eps);
  }
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
    dnS = dnS.defined() ? dnS.contiguous() : dnS;
    fin = final_state_terms(dcS, dnS, k, v, ig, fcum, m_final, m0, init, state_on_tensor_cores);
  }

  if (init.given()) {
    p.dq_add = {ptr_or_null(init.dh_c), init_terms.dq_x_scale.data_ptr<float>(),
                ptr_or_null(init.n), init_terms.dq_y_scale.data_ptr<float>()};
  }
  if (fin.g.defined()) {
    const float* g = fin.g.data_ptr<float>();
    p.dk_add = {ptr_or_null(fin.dk_x), g, ptr_or_null(dnS), g};
    p.dv_add = {ptr_or_null(fin.dv_x), g, nullptr, nullptr};
    if (fin.dc_lowp.defined()) {
      p.dc_lowp = fin.dc_lowp.data_ptr();
      p.dc_factor = ptr_or_null(fin.dc_factor);
      p.k_dk_state_ptr = fin.k_dk_state.data_ptr<float>();
    }
  }
  launch(p, BackwardPass::kGradients, stream);
  if (fin.g.defined()) finish_final_terms(fin, dcS, dnS, init);

  // dF_t = (row sums of dlogw, state column included) - (column sums, final row included).
  if (fin.di_add.defined()) di = di + fin.di_add;
  const at::Tensor df = forget_gate_grad(f, rowsum, di.contiguous(),
                                         contiguous_if_defined(init_terms.row_add),
                                         contiguous_if_defined(fin.last_row_add));

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
