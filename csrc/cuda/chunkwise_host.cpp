#include "cuda/chunkwise_host.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "aten/mlstm_chunkwise_aten.h"  // not_requested_output
#include "cuda/chunk_scan.h"
#include "cuda/kernel_inputs.h"
#include "cuda/state_gemm.h"

namespace xlstm {
namespace {

// The last chunk is padded with steps that change nothing: no input (log i_t very
// negative) and no decay (log sigmoid(f_t) = 0). Finite sentinels keep the kernels'
// arithmetic finite: exp(-1e30 - x) is 0 for every x they meet.
constexpr double kNoInput = -1e30;        // input-gate pre-activation of a padding step
constexpr double kNoDecay = 1e30;         // forget-gate pre-activation: log sigmoid = 0
constexpr double kPaddingStabilizer = 1e30;  // m of a padding row: every weight of it is 0

struct ChunkLayout {
  int64_t B, NH, S, L, N;
  int64_t pad() const { return N * L - S; }
};

ChunkLayout make_layout(const at::Tensor& q, int64_t chunk_size) {
  ChunkLayout c;
  c.B = q.size(0);
  c.NH = q.size(1);
  c.S = q.size(2);
  c.L = std::max<int64_t>(1, std::min(chunk_size, c.S));
  c.N = (c.S + c.L - 1) / c.L;
  return c;
}

// (B, NH, S[, D]) -> (B, NH * N, L[, D]): chunk n of head h becomes head h * N + n. A
// view when no padding is needed and the heads are stored one after another.
at::Tensor chunk_view(const at::Tensor& x, const ChunkLayout& c, double pad_value) {
  at::Tensor t = x;
  if (c.pad() > 0) {
    t = x.dim() == 4 ? at::constant_pad_nd(x, {0, 0, 0, c.pad()}, pad_value)
                     : at::constant_pad_nd(x, {0, c.pad()}, pad_value);
  }
  if (c.NH > 1 && t.stride(1) != c.N * c.L * t.stride(2)) t = t.contiguous();
  std::vector<int64_t> sizes{c.B, c.NH * c.N, c.L};
  std::vector<int64_t> strides{t.stride(0), c.L * t.stride(2), t.stride(2)};
  if (x.dim() == 4) {
    sizes.push_back(x.size(3));
    strides.push_back(t.stride(3));
  }
  return t.as_strided(sizes, strides, t.storage_offset());
}

// (B, NH * N, L[, D]) contiguous -> (B, NH, S[, D]).
at::Tensor unchunk(const at::Tensor& x, const ChunkLayout& c) {
  std::vector<int64_t> sizes{c.B, c.NH, c.N * c.L};
  if (x.dim() == 4) sizes.push_back(x.size(3));
  const at::Tensor t = x.reshape(sizes);
  return c.pad() > 0 ? t.narrow(2, 0, c.S).contiguous() : t;
}

// The chunk view of every input; i and f in fp32 (their padding needs fp32's range).
struct ChunkedInputs {
  ChunkLayout layout;
  at::Tensor q, k, v, i, f;
};

// q may be undefined (the final state alone needs no queries).
ChunkedInputs chunk_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& i, const at::Tensor& f, int64_t chunk_size) {
  ChunkedInputs c;
  c.layout = make_layout(k, chunk_size);
  if (q.defined()) c.q = chunk_view(q, c.layout, 0.0);
  c.k = chunk_view(k, c.layout, 0.0);
  c.v = chunk_view(v, c.layout, 0.0);
  c.i = chunk_view(i.to(at::kFloat), c.layout, kNoInput);
  c.f = chunk_view(f.to(at::kFloat), c.layout, kNoDecay);
  return c;
}

// The (C, n, m) state entering every chunk (what the chunk's kernels read as their
// initial state), the state after the last step, and the stabilizers in between.
struct ChunkStates {
  at::Tensor c, n, m;  // (B, NH*N, DQK, DV), (B, NH*N, DQK), (B, NH*N, 1) fp32
  at::Tensor m_end;    // (B, NH*N, 1) fp32: m of the state leaving each chunk
  at::Tensor carry;    // (B*NH, N) fp32: exp(b_end + m - m_end), a state's decay across a chunk
  at::Tensor c_last, n_last, m_last;  // (B, NH, DQK, DV), (B, NH, DQK), (B, NH, 1)
};

ChunkStates chunk_states(const ChunkedInputs& in, const std::optional<at::Tensor>& c0,
                         const std::optional<at::Tensor>& n0,
                         const std::optional<at::Tensor>& m0) {
  const ChunkLayout& c = in.layout;
  const int64_t B = c.B, NH = c.NH, N = c.N, L = c.L;
  const int64_t DQK = in.k.size(3), DV = in.v.size(3);
  const auto input_dtype = in.k.scalar_type();

  // Within-chunk cumulative log forget b, in fp64 like the kernels' F.
  const at::Tensor b = at::log_sigmoid(in.f.to(at::kDouble)).reshape({B, NH, N, L}).cumsum(-1);
  const at::Tensor b_end = b.select(-1, L - 1);  // (B, NH, N)
  const at::Tensor log_to_end =
      b_end.unsqueeze(-1) - b + in.i.to(at::kDouble).reshape({B, NH, N, L});
  const at::Tensor chunk_max = std::get<0>(log_to_end.max(-1));  // (B, NH, N)
  // m_{k+1} = max(b_end_k + m_k, chunk_max_k) in closed form: with E_k = sum_{j<=k}
  // b_end_j, m_{k+1} = E_k + max(m_0, max_{j<=k} (chunk_max_j - E_j)).
  const at::Tensor E = b_end.cumsum(-1);
  const at::Tensor m0d = m0.has_value() ? m0->to(at::kDouble).reshape({B, NH, 1})
                                        : at::zeros({B, NH, 1}, b.options());
  const at::Tensor m_next = E + at::maximum(std::get<0>(at::cummax(chunk_max - E, -1)), m0d);
  // The kernels read fp32 stabilizers: the coefficients use the rounded values, so that
  // every scaled state is scaled by exactly the m its chunk reads.
  const at::Tensor m_end = m_next.to(at::kFloat);  // (B, NH, N)
  const at::Tensor m_start = at::cat({m0d.to(at::kFloat), m_end.narrow(-1, 0, N - 1)}, -1);
  const at::Tensor m_end_d = m_end.to(at::kDouble);
  const at::Tensor carry = (b_end + m_start.to(at::kDouble) - m_end_d).exp().to(at::kFloat);
  const at::Tensor g = (log_to_end - m_end_d.unsqueeze(-1)).exp().to(at::kFloat);  // (B,NH,N,L)

  // Each chunk's own addition to the state leaving it: sum_j g_j k_j v_j^T and sum_j g_j k_j.
  auto [kv_add, k_add] =
      weighted_outer_sum(in.k, g.reshape({B, NH * N, L}), in.v, input_dtype, /*want_row_sum=*/true);

  ChunkStates st;
  st.carry = carry.reshape({B * NH, N}).contiguous();
  const at::Tensor c_init =
      c0.has_value() ? state_fp32(c0).reshape({B * NH, DQK * DV}) : at::Tensor();
  const at::Tensor n_init = n0.has_value() ? state_fp32(n0).reshape({B * NH, DQK}) : at::Tensor();
  auto [c_starts, c_last] =
      chunk_linear_scan(kv_add.reshape({B * NH, N, DQK * DV}).contiguous(), st.carry, c_init, false);
  auto [n_starts, n_last] =
      chunk_linear_scan(k_add.reshape({B * NH, N, DQK}).contiguous(), st.carry, n_init, false);
  st.c = c_starts.view({B, NH * N, DQK, DV});
  st.n = n_starts.view({B, NH * N, DQK});
  st.m = m_start.reshape({B, NH * N, 1});
  st.m_end = m_end.reshape({B, NH * N, 1});
  st.c_last = c_last.view({B, NH, DQK, DV});
  st.n_last = n_last.view({B, NH, DQK});
  st.m_last = m_end.narrow(-1, N - 1, 1).contiguous();
  return st;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
run_chunkwise_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& i, const at::Tensor& f,
                      const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& n0,
                      const std::optional<at::Tensor>& m0, double eps, bool return_last_states,
                      int64_t chunk_size, ForwardLauncher launch, bool sm90_kernel) {
  const ChunkedInputs in = chunk_inputs(q, k, v, i, f, chunk_size);
  const ChunkStates st = chunk_states(in, c0, n0, m0);
  auto [h, m_rows, norm_rows] = run_parallel_forward(in.q, in.k, in.v, in.i, in.f, st.c, st.n,
                                                     st.m, eps, launch, sm90_kernel);
  at::Tensor c_last, n_last, m_last;
  if (return_last_states) {
    c_last = st.c_last;
    n_last = st.n_last;
    m_last = st.m_last;
  } else {
    c_last = not_requested_output(m_rows.options());  // distinct: outputs must not alias
    n_last = not_requested_output(m_rows.options());
    m_last = not_requested_output(m_rows.options());
  }
  return {unchunk(h, in.layout), unchunk(m_rows, in.layout), unchunk(norm_rows, in.layout),
          c_last, n_last, m_last};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> run_chunkwise_final_state(
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& i, const at::Tensor& f,
    const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& n0,
    const std::optional<at::Tensor>& m0, int64_t chunk_size) {
  const ChunkStates st = chunk_states(chunk_inputs(at::Tensor(), k, v, i, f, chunk_size), c0, n0, m0);
  return {st.c_last, st.n_last, st.m_last};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
run_chunkwise_backward(const at::Tensor& dh, const std::optional<at::Tensor>& dc_last,
                       const std::optional<at::Tensor>& dn_last, const at::Tensor& q,
                       const at::Tensor& k, const at::Tensor& v, const at::Tensor& i,
                       const at::Tensor& f, const std::optional<at::Tensor>& c0,
                       const std::optional<at::Tensor>& n0, const std::optional<at::Tensor>& m0,
                       const at::Tensor& m_rows, double eps, int64_t chunk_size,
                       BackwardLauncher launch, bool state_on_tensor_cores) {
  const ChunkedInputs in = chunk_inputs(q, k, v, i, f, chunk_size);
  const ChunkLayout& c = in.layout;
  const int64_t B = c.B, NH = c.NH, N = c.N, DQK = q.size(3), DV = v.size(3);
  const ChunkStates st = chunk_states(in, c0, n0, m0);
  const at::Tensor dh_c = chunk_view(dh.to(q.scalar_type()), c, 0.0);
  const at::Tensor m_c = chunk_view(m_rows.to(at::kFloat), c, kPaddingStabilizer);

  ChunkedBackward chunked;
  if (c.pad() > 0) {
    chunked.row_valid = (at::arange(c.N * c.L, q.options().dtype(at::kLong)) < c.S)
                            .reshape({1, 1, c.N * c.L})
                            .expand({1, c.NH, c.N * c.L})
                            .reshape({1, c.NH * c.N, c.L});
  }
  chunked.m_final = st.m_end;
  // Reverse scan: the gradient of the state leaving chunk k is the one entering chunk
  // k + 1, dC_start = carry * dC_end + (that chunk's rows' share).
  at::Tensor dc_first, dn_first;  // the gradient of the state entering chunk 0
  chunked.final_state_grads = [&](const at::Tensor& dc_rows, const at::Tensor& dn_rows) {
    auto init = [&](const std::optional<at::Tensor>& t, int64_t E) {
      return t.has_value() && t->numel() > 0 ? t->to(at::kFloat).reshape({B * NH, E}).contiguous()
                                             : at::Tensor();
    };
    auto [dc_end, dc0] = chunk_linear_scan(dc_rows.reshape({B * NH, N, DQK * DV}).contiguous(),
                                           st.carry, init(dc_last, DQK * DV), true);
    auto [dn_end, dn0] = chunk_linear_scan(dn_rows.reshape({B * NH, N, DQK}).contiguous(),
                                           st.carry, init(dn_last, DQK), true);
    dc_first = dc0;
    dn_first = dn0;
    return std::make_pair(dc_end.view({B, NH * N, DQK, DV}), dn_end.view({B, NH * N, DQK}));
  };
  auto [dq, dk, dv, di, df, unused_dc, unused_dn] =
      run_parallel_backward(dh_c, std::nullopt, std::nullopt, in.q, in.k, in.v, in.i, in.f,
                            st.c, st.n, st.m, m_c, /*h=*/at::Tensor(), /*norm_rows=*/at::Tensor(),
                            eps, launch, state_on_tensor_cores, &chunked);
  (void)unused_dc;
  (void)unused_dn;

  const auto opts = m_c.options();
  const at::Tensor dc0 = c0.has_value()
                             ? dc_first.view({B, NH, DQK, DV}).to(c0->scalar_type())
                             : not_requested_output(opts);
  const at::Tensor dn0 = n0.has_value() ? dn_first.view({B, NH, DQK}).to(n0->scalar_type())
                                        : not_requested_output(opts);
  return {unchunk(dq, c),
          unchunk(dk, c),
          unchunk(dv, c),
          unchunk(di, c).to(i.scalar_type()),
          unchunk(df, c).to(f.scalar_type()),
          dc0,
          dn0};
}

}  // namespace xlstm
