// Epilogue of the sm_90a family: normalizer b (quad sum of the per-thread partial
// sums), h = O / (max(|b|, exp(-m)) + eps) in the input dtype, and the row statistic
// b_t, written once per row (by the DV slice 0 CTA). m_t was written by the host.
#pragma once

#include <cute/tensor.hpp>

#include "mlstm_fwd_sm90_mainloop.h"
#include "sm90_utils.h"

namespace xlstm_sm90 {

using namespace cute;

template <class Traits>
struct CollectiveEpilogue {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockDV = Traits::kBlockDV;

  template <class FrgO>
  CUTLASS_DEVICE static void store(MlstmForwardParams const& p, TileCoord const& tile,
                                   int thread_idx, FrgO& tOrO, float const (&m_run)[2],
                                   float const (&b_run)[2]) {
    typename Traits::TiledMmaO tiled_mma_o;
    auto thr_mma_o = tiled_mma_o.get_thread_slice(thread_idx);
    Tensor tOrO_rc = make_tensor(tOrO.data(), acc_layout_rowcol(tOrO.layout()));
    Tensor tOcO = thr_mma_o.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockDV>>{}));
    Tensor tOcO_rc = make_tensor(tOcO.data(), acc_layout_rowcol(tOcO.layout()));
    Element* h_base = static_cast<Element*>(p.h_ptr) + tile.b * p.h_batch_stride +
                      tile.h * p.h_head_stride + static_cast<int64_t>(tile.dv_block) * kBlockDV;
    CUTLASS_PRAGMA_UNROLL
    for (int x = 0; x < 2; ++x) {
      const float b = quad_sum(b_run[x]);
      const float inv = 1.f / (fmaxf(fabsf(b), __expf(-m_run[x])) + p.eps);
      const int64_t t = tile.row0 + get<0>(tOcO_rc(x, 0));
      if (t < p.S) {
        Element* h_row = h_base + t * p.h_row_stride;
        CUTLASS_PRAGMA_UNROLL
        for (int c = 0; c < size<1>(tOrO_rc); c += 2) {
          *reinterpret_cast<uint32_t*>(h_row + get<1>(tOcO_rc(x, c))) =
              pack2<Element>(tOrO_rc(x, c) * inv, tOrO_rc(x, c + 1) * inv);
        }
        if (tile.dv_block == 0 && thread_idx % 4 == 0) p.norm_rows_ptr[tile.bh * p.S + t] = b;
      }
    }
  }
};

}  // namespace xlstm_sm90
