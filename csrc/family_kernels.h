// Host entry points of the per-architecture kernel families, each compiled only
// when its family is in the build (XLSTM_FAMILY_* defines from setup.py).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#ifdef XLSTM_FAMILY_SM80
// csrc/sm80: tiled parallel forward, fp16/bf16, DQK in {64,128,256}, DV in
// {64,128,256,512}. Returns (h, m_rows, norm_rows); inputs validated by the caller.
std::tuple<at::Tensor, at::Tensor, at::Tensor> mlstm_parallel_forward_sm80(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& i,
    const at::Tensor& f, const std::optional<at::Tensor>& c0,
    const std::optional<at::Tensor>& n0, const std::optional<at::Tensor>& m0, double eps);
#endif
