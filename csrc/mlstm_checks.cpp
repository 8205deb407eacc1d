#include "mlstm_checks.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <string>

namespace xlstm {
namespace {

bool is_qkv_dtype(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

// States are float32; float64 is accepted alongside float64 inputs (gradcheck).
bool is_state_dtype(at::ScalarType t, at::ScalarType qkv) {
  return t == at::kFloat || (t == at::kDouble && qkv == at::kDouble);
}

void check_rank(const at::Tensor& t, const char* name, int64_t rank, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == rank, "mlstm: `", name, "` must have ", rank, " dimensions ",
                    layout, ", got shape ", t.sizes());
}

void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef expected,
                 const char* layout) {
  TORCH_CHECK_VALUE(t.sizes() == expected, "mlstm: `", name, "` must have shape ", layout, " = ",
                    expected, ", got ", t.sizes());
}

void check_same_device(const at::Tensor& t, const char* name, const at::Tensor& q) {
  TORCH_CHECK(t.device() == q.device(), "mlstm: `", name, "` is on ", t.device(),
              " but `q` is on ", q.device(), "; all tensors must be on the same device");
}

void check_float_gate(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "mlstm: `", name,
                   "` must be a floating-point tensor (it is used in float32), got ",
                   t.scalar_type());
}

void check_state(const std::optional<at::Tensor>& s, const char* name, at::IntArrayRef expected,
                 const char* layout, const at::Tensor& q) {
  if (!s.has_value()) return;
  TORCH_CHECK_TYPE(is_state_dtype(s->scalar_type(), q.scalar_type()), "mlstm: `", name,
                   "` must be float32 (or float64 with float64 inputs), got ", s->scalar_type());
  check_same_device(*s, name, q);
  check_shape(*s, name, expected, layout);
}

}  // namespace

void check_forward_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& i, const at::Tensor& f,
                          const std::optional<at::Tensor>& c_initial,
                          const std::optional<at::Tensor>& n_initial,
                          const std::optional<at::Tensor>& m_initial,
                          double eps, int64_t chunk_size) {
  check_rank(q, "q", 4, "(B, NH, S, DQK)");
  check_rank(k, "k", 4, "(B, NH, S, DQK)");
  check_rank(v, "v", 4, "(B, NH, S, DV)");
  check_rank(i, "i", 3, "(B, NH, S)");
  check_rank(f, "f", 3, "(B, NH, S)");

  TORCH_CHECK_TYPE(is_qkv_dtype(q.scalar_type()),
                   "mlstm: `q` must be float16, bfloat16, float32 or float64, got ",
                   q.scalar_type());
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type(), "mlstm: `k` must have the dtype of `q` (",
                   q.scalar_type(), "), got ", k.scalar_type());
  TORCH_CHECK_TYPE(v.scalar_type() == q.scalar_type(), "mlstm: `v` must have the dtype of `q` (",
                   q.scalar_type(), "), got ", v.scalar_type());
  check_float_gate(i, "i");
  check_float_gate(f, "f");

  for (auto [t, name] : {std::pair{&k, "k"}, {&v, "v"}, {&i, "i"}, {&f, "f"}}) {
    check_same_device(*t, name, q);
  }

  const int64_t B = q.size(0), NH = q.size(1), S = q.size(2), DQK = q.size(3), DV = v.size(3);
  TORCH_CHECK_VALUE(S >= 1, "mlstm: the sequence length S (dim 2 of `q`) must be at least 1, got ",
                    S);
  TORCH_CHECK_VALUE(DQK >= 1 && DV >= 1, "mlstm: head dims must be at least 1, got DQK=", DQK,
                    " (`q`) and DV=", DV, " (`v`)");
  check_shape(k, "k", q.sizes(), "(B, NH, S, DQK) like `q`");
  check_shape(v, "v", {B, NH, S, DV}, "(B, NH, S, DV) with B, NH, S of `q`");
  check_shape(i, "i", {B, NH, S}, "(B, NH, S)");
  check_shape(f, "f", {B, NH, S}, "(B, NH, S)");

  check_state(c_initial, "c_initial", {B, NH, DQK, DV}, "(B, NH, DQK, DV)", q);
  check_state(n_initial, "n_initial", {B, NH, DQK}, "(B, NH, DQK)", q);
  check_state(m_initial, "m_initial", {B, NH, 1}, "(B, NH, 1)", q);

  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0.0,
                    "mlstm: `eps` must be a finite number >= 0, got ", eps);
  TORCH_CHECK_VALUE(chunk_size >= 0,
                    "mlstm: `chunk_size` must be positive (or None for the default), got ",
                    chunk_size);
}

void check_backward_inputs(const at::Tensor& dh,
                           const std::optional<at::Tensor>& dc_last,
                           const std::optional<at::Tensor>& dn_last,
                           const at::Tensor& q, const at::Tensor& v,
                           const at::Tensor& h, const at::Tensor& m_rows,
                           const at::Tensor& norm_rows) {
  const int64_t B = q.size(0), NH = q.size(1), S = q.size(2), DQK = q.size(3), DV = v.size(3);
  for (auto [t, name] : {std::pair{&dh, "dh"}, {&h, "h"}, {&m_rows, "m_rows"},
                         {&norm_rows, "norm_rows"}}) {
    check_same_device(*t, name, q);
    TORCH_CHECK_TYPE(at::isFloatingType(t->scalar_type()), "mlstm_backward: `", name,
                     "` must be floating point, got ", t->scalar_type());
  }
  check_shape(dh, "dh", {B, NH, S, DV}, "(B, NH, S, DV)");
  check_shape(h, "h", {B, NH, S, DV}, "(B, NH, S, DV)");
  check_shape(m_rows, "m_rows", {B, NH, S}, "(B, NH, S)");
  check_shape(norm_rows, "norm_rows", {B, NH, S}, "(B, NH, S)");
  // Empty tensors stand for "no gradient" (outputs that were not requested).
  if (dc_last.has_value() && dc_last->numel() > 0) {
    check_same_device(*dc_last, "dc_last", q);
    check_shape(*dc_last, "dc_last", {B, NH, DQK, DV}, "(B, NH, DQK, DV)");
  }
  if (dn_last.has_value() && dn_last->numel() > 0) {
    check_same_device(*dn_last, "dn_last", q);
    check_shape(*dn_last, "dn_last", {B, NH, DQK}, "(B, NH, DQK)");
  }
}

}  // namespace xlstm
