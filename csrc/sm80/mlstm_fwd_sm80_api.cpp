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
#ifndef XLSTM_SM80_DISABLE_HDIM64
      case 64: xlstm_sm80::run_mlstm_fwd_sm80_<kBf16, 64>(params, stream); return;
#endif
#ifndef XLSTM_SM80_DISABLE_HDIM128
      case 128: xlstm_sm80::run_mlstm_fwd_sm80_<kBf16, 128>(params, stream); return;
#endif
#ifndef XLSTM_SM80_DISABLE_HDIM256
      case 256: xlstm_sm80::run_mlstm_fwd_sm80_<kBf16, 256>(params, stream); return;
#endif
      default: break;
    }
    TORCH_CHECK(false, "mlstm sm80 forward: DQK (head dim of q and k) must be one of 64, 128, "
                "256 (minus any disabled in this build with XLSTM_SM80_DISABLE_HDIM*), got ",
                params.DQK);
  };
#ifndef XLSTM_SM80_DISABLE_BF16
  if (params.is_bf16) return by_dqk(std::true_type{});
#endif
#ifndef XLSTM_SM80_DISABLE_FP16
  if (!params.is_bf16) return by_dqk(std::false_type{});
#endif
  TORCH_CHECK(false, "mlstm sm80 forward: ", params.is_bf16 ? "bfloat16" : "float16",
              " was disabled in this build (XLSTM_SM80_DISABLE_BF16 / XLSTM_SM80_DISABLE_FP16)");
}
