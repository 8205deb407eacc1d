// The sm_90a kernels describe (S, D, NH, B) tensors to TMA with 32-bit extents; both
// entry points (forward, backward) check them with this before any launch.
#pragma once

#include <cstdint>

#include <c10/util/Exception.h>

inline void check_tma_extents(const char* who, int64_t B, int64_t NH, int64_t S) {
  TORCH_CHECK(S >= 1 && S < (int64_t{1} << 31) && NH < (int64_t{1} << 31) &&
                  B < (int64_t{1} << 31),
              who, ": B, NH and S must each be in [1, 2^31) (TMA extents), got B = ", B,
              ", NH = ", NH, ", S = ", S);
}
