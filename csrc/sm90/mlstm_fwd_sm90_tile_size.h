// Tile table of the sm_90a family, shared by host and device code (no CuTe here).
//
// A CTA owns kBlockM = 128 query rows (two consumer warpgroups x 64 rows) of one
// (batch, head) and a kBlockDV-wide slice of DV; it walks the causal key tiles
// j0 = 0, kBlockN, ... <= last row. Per consumer thread the fp32 accumulators are
// O: kBlockDV / 2 registers and S: kBlockN / 2 registers (64 x N WGMMA tiles), out
// of the 240 that setmaxnreg grants each consumer thread, so:
//   kBlockDV = min(DV, 256): DV = 512 is split over two CTAs; each
//              recomputes S = Q K^T, which is cheaper than spilling O.
//   kBlockN  = 128 when O has at most 128 columns and DQK <= 128, else 64: with
//              O 256 wide the S tile must shrink to stay in registers, and with
//              DQK = 256 two K stages of 128 rows would not fit shared memory
//              (Q 64 KB + K 128 KB + V 64 KB > 227 KB).
#pragma once

namespace xlstm_sm90 {

constexpr int kBlockM = 128;

// K/V pipeline depth: 3 stages where Q + 3 K/V stages fit the 227 KB of shared memory
// (all tiles but DQK = 256 with a 256-wide DV tile), else 2. Two consumer warpgroups
// release a stage only when both are done with it, so with 2 stages the next tile's
// load has about half a tile's compute time to arrive from L2.
constexpr int kSmemLimitBytes = 227 * 1024;
constexpr int kSmemExtraBytes = 2560;  // column terms (3 x 528 B), barriers, work ids
constexpr int tile_stages(int dqk, int block_dv, int block_n) {
  return 2 * (kBlockM * dqk + 3 * block_n * (dqk + block_dv)) + kSmemExtraBytes <= kSmemLimitBytes
             ? 3 : 2;
}

constexpr int tile_block_dv(int dv) { return dv < 256 ? dv : 256; }

constexpr int tile_block_n(int dqk, int block_dv) {
  return (block_dv <= 128 && dqk <= 128) ? 128 : 64;
}

// Consumer schedule (see Schedule in mlstm_fwd_sm90_kernel_traits.h for the
// measurements): FA3's intra-warpgroup overlap where a third K/V stage gives the
// loads slack and the 128-wide S tile is not next to a 128-wide O (there the overlap's
// extra live P tile starves the exponentials of registers); else the serial schedule.
constexpr bool tile_overlap_schedule(int dqk, int block_dv) {
  const int block_n = tile_block_n(dqk, block_dv);
  return tile_stages(dqk, block_dv, block_n) >= 3 && !(block_n == 128 && block_dv >= 128);
}

}  // namespace xlstm_sm90
