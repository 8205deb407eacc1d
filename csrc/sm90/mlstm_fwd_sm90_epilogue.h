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
    // A row's accumulator element c of lane q sits in column 8 (c / 2) + 2 q + c % 2, so a
    // quad holds 8 contiguous columns per c / 2. quad_transpose regroups four such
    // blocks so that each lane stores 16 contiguous bytes: one 16-byte store per 32
    // columns instead of four 4-byte ones, and whole 32-byte sectors (ncu counted half
    // of the 4-byte stores' sectors as excess).
    const int q = thread_idx % 4;
    static_assert(kBlockDV % 32 == 0);
    CUTLASS_PRAGMA_UNROLL
    for (int x = 0; x < 2; ++x) {
      const float b = quad_sum(b_run[x]);
      const float inv = 1.f / (fmaxf(fabsf(b), __expf(-m_run[x])) + p.eps);
      const int64_t t = tile.row0 + get<0>(tOcO_rc(x, 0));
      Element* h_row = h_base + t * p.h_row_stride;
      CUTLASS_PRAGMA_UNROLL
      for (int g = 0; g < kBlockDV / 32; ++g) {
        uint32_t w[4];
        CUTLASS_PRAGMA_UNROLL
        for (int j = 0; j < 4; ++j) {
          const int c = 2 * (4 * g + j);
          w[j] = pack2<Element>(tOrO_rc(x, c) * inv, tOrO_rc(x, c + 1) * inv);
        }
        quad_transpose(w, q);  // every lane: rows past S take part in the shuffles
        if (t < p.S) {
          // h rows are DV-contiguous with DV a multiple of 64 (the host allocates h).
          *reinterpret_cast<uint4*>(h_row + 32 * g + 8 * q) = make_uint4(w[0], w[1], w[2], w[3]);
        }
      }
      if (t < p.S && tile.dv_block == 0 && q == 0) p.norm_rows_ptr[tile.bh * p.S + t] = b;
    }
  }
};

}  // namespace xlstm_sm90
