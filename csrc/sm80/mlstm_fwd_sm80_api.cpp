// Dispatch of the sm_80 family: dtype -> DQK -> (DV tile, initial state) inside the
// launch template.
#include "mlstm_fwd_sm80_api.h"

#include <c10/util/Exception.h>

void run_mlstm_fwd_sm80(const MlstmForwardParams& params, cudaStream_t stream) {
  TORCH_CHECK(params.DV == 64 || params.DV == 128 || params.DV == 256 || params.DV == 512,
              "mlstm sm80 forward: DV (head dim of v) must be one of 64, 128, 256, 512, got ",
              params.DV);
  auto by_dqk = [&](auto bf16_tag) {
    constexpr bool kBf16 = decltype(bf16_tag)::value;
    switch (params.DQK) {
      case 64: xlstm_sm80::run_mlstm_fwd_sm80_<kBf16, 64>(params, stream); return;
      case 128: xlstm_sm80::run_mlstm_fwd_sm80_<kBf16, 128>(params, stream); return;
      case 256: xlstm_sm80::run_mlstm_fwd_sm80_<kBf16, 256>(params, stream); return;
      default:
        TORCH_CHECK(false, "mlstm sm80 forward: DQK (head dim of q and k) must be one of 64, "
                    "128, 256, got ", params.DQK);
    }
  };
  if (params.is_bf16) {
    by_dqk(std::true_type{});
  } else {
    by_dqk(std::false_type{});
  }
}
