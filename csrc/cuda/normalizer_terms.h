// The normalizer's terms of one row of the backward (normalizer_grad.h): rden_t and db_t
// from the normalizer b_t, the stabilizer m_t and a dot product of dh_t. One formula for
// every kernel that forms them (normalizer_grad.cu, the sm90 dq kernel).
//
// With den_t = max(|b_t|, exp(-m_t)) + eps (a NaN b_t stays NaN) and h_t = u_t / den_t:
//   rden_t = 1 / den_t,   db_t = -(dh_t . u_t) rden_t^2 sign(b_t) [|b_t| > exp(-m_t)],
// where dh_t . u_t comes either directly (the kernels' row pass) or as den_t (dh_t . h_t)
// (the forward's output), so db_t = -(dh_t . h_t) rden_t sign(b_t) [...].
#pragma once

#include <cmath>

struct NormalizerTerms {
  float rden, db;
};

// dot: dh_t . u_t if dot_is_dh_u, else dh_t . h_t.
__device__ __forceinline__ NormalizerTerms normalizer_terms(float b, float m, float eps,
                                                            float dot, bool dot_is_dh_u) {
  const float absb = fabsf(b);
  const float floor_t = expf(-m);
  // As the forward's denominator: a NaN b stays NaN (fmaxf alone would drop it).
  const float den = (absb != absb ? absb : fmaxf(absb, floor_t)) + eps;
  const float rden = 1.f / den;
  const float active_sign = absb > floor_t ? (b > 0.f ? 1.f : -1.f) : 0.f;
  const float dhu_over_den2 = dot_is_dh_u ? dot * rden * rden : dot * rden;
  return {rden, absb != absb ? absb : -dhu_over_den2 * active_sign};
}
