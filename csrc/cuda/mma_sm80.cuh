// The few sm_80 warp-level instructions the state kernels use (scaled_outer_sum.cu,
// state_row_product.cu): ldmatrix, bf16 mma.sync m16n8k16 with fp32 accumulators, and
// 16-byte cp.async. Compiled to nothing below sm_80 (the host never launches the
// kernels there: see the *_supported functions).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace xlstm {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define XLSTM_SM80_ASM(...) asm volatile(__VA_ARGS__)
#else
#define XLSTM_SM80_ASM(...) \
  do {                      \
  } while (0)
#endif

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 bf16 matrices; lane L gives the address of row L % 8 of matrix L / 8.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&reg)[4], uint32_t addr) {
  XLSTM_SM80_ASM("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(reg[0]), "=r"(reg[1]), "=r"(reg[2]), "=r"(reg[3])
                 : "r"(addr));
}
// The same, each matrix transposed on the way.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&reg)[4], uint32_t addr) {
  XLSTM_SM80_ASM("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(reg[0]), "=r"(reg[1]), "=r"(reg[2]), "=r"(reg[3])
                 : "r"(addr));
}

// acc += A (16 x 16, row) * B (16 x 8, col), bf16 operands, fp32 accumulation.
__device__ __forceinline__ void mma_bf16_16816(float (&acc)[4], const uint32_t (&a)[4],
                                               uint32_t b0, uint32_t b1) {
  XLSTM_SM80_ASM(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared, zero-filled when !valid (src is then not read).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  XLSTM_SM80_ASM("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit_and_wait_all() {
  XLSTM_SM80_ASM("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::);
}

// Shared-memory tiles as rows of 16-byte chunks, the chunk index XORed with the row so
// that the 8 rows one ldmatrix matrix reads, and the chunks a warp stores, fall in
// distinct banks. Rows of kChunks >= 8 chunks (128 bytes or more):
template <int kChunks>
__device__ __forceinline__ int swizzled_chunk(int row, int chunk) {
  static_assert(kChunks >= 8);
  return row * kChunks + (chunk ^ (row & 7));
}
// Rows of 4 chunks (64 bytes: rows 2r and 2r + 1 share a 128-byte line).
__device__ __forceinline__ int swizzled_chunk4(int row, int chunk) {
  return row * 4 + (chunk ^ ((row >> 1) & 3));
}

// (v0, v1) as bf16x2 (round to nearest), and their remainders lo = bf16(v - hi): the hi +
// lo split of an fp32 value to about 2^-17.
__device__ __forceinline__ uint32_t bf16x2_bits(__nv_bfloat162 v) {
  return *reinterpret_cast<const uint32_t*>(&v);
}
__device__ __forceinline__ void split_bf16x2(float v0, float v1, uint32_t& hi, uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(v0, v1);
  hi = bf16x2_bits(h);
  lo = bf16x2_bits(__floats2bfloat162_rn(v0 - __low2float(h), v1 - __high2float(h)));
}

}  // namespace xlstm
