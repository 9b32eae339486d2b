// The shared-memory layouts and wgmma descriptor steps of kernels/smem_layout.h on the CPU: every
// element a descriptor makes wgmma read is the element the copies stored there. The hardware's
// reading is modelled by the canonical layouts CUTLASS's CuTe documents for wgmma descriptors (in
// 16-byte units T; LBO/SBO the leading/stride byte offsets):
//   K-major, no swizzle:   ((8,m),(T,2k)):((1T,SBO),(1,LBO))
//   K-major, 128B swizzle:  ((8,m),(T,2k)):((8T,SBO),(1,T))      then Swizzle<3,4,3>
//   MN-major, no swizzle:   ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
//   MN-major, 128B swizzle: ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)) then Swizzle<3,4,3>
// where Swizzle<3,4,3> XORs byte-address bits 4-6 with bits 7-9 (a tile starts 1024-aligned, so
// tile offsets stand for addresses). The model reproduces the descriptors the GPU proved before
// the swizzle (the no-swizzle Q, K and V steps of run 9's kernel: bench/kernels/NOTES.md), the
// MN-major one included, whose two offsets swap meaning under the swizzle; the controls below
// show the check fails for a wrong offset or a missing swizzle.
#include "kernels/smem_layout.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <vector>

namespace squeezeserve::kernels::detail {
namespace {

namespace wl = ws_layout;

uint32_t Swizzle128(uint32_t byte) { return byte ^ (((byte >> 7) & 7) << 4); }

// Byte read for element (row n, k) of a K-major operand step, k < 16.
uint32_t KMajorSw128(const OperandStep& s, int n, int k) {
  return Swizzle128(s.start + (n % 8) * 128 + (n / 8) * s.stride + k * 2);
}
uint32_t KMajorPlain(const OperandStep& s, int n, int k) {
  return s.start + (n % 8) * 16 + (n / 8) * s.stride + (k % 8) * 2 + (k / 8) * s.leading;
}
// Byte read for element (k, column n) of an MN-major operand step, k < 16.
uint32_t MnMajorPlain(const OperandStep& s, int k, int n) {
  return s.start + (n % 8) * 2 + (n / 8) * s.stride + (k % 8) * 16 + (k / 8) * s.leading;
}
uint32_t MnMajorSw128(const OperandStep& s, int k, int n) {
  return Swizzle128(s.start + (n % 64) * 2 + (n / 64) * s.leading + (k % 8) * 128 + (k / 8) * s.stride);
}

// Where the warp-specialized prefill's producer stores element (row, dim) of a K or V tile.
std::vector<uint32_t> StoredWsTile() {
  std::vector<uint32_t> at(wl::kKeys * wl::kD, ~0u);
  for (int l = 0; l < wl::kKeys * wl::kD / 8; ++l)
    for (int e = 0; e < 8; ++e) at[wl::copy_row(l) * wl::kD + wl::copy_dim(l) + e] = 2 * (wl::copy_element(l) + e);
  return at;
}
// Where chunk order stores element (row, dim) of 64 rows of D in core matrices (the consumer's Q
// copy, copy_core_tile's centroid tiles).
template <int D>
std::vector<uint32_t> StoredCore() {
  std::vector<uint32_t> at(64 * D, ~0u);
  for (int q = 0; q < 64 * D / 8; ++q)
    for (int e = 0; e < 8; ++e) at[core_chunk_row<D>(q) * D + core_chunk_col<D>(q) + e] = 2 * (8 * q + e);
  return at;
}
std::vector<uint32_t> StoredQ() { return StoredCore<wl::kD>(); }

// Mismatches between what S = Q K^T's K steps read and where K was stored.
int KMismatches(const std::vector<uint32_t>& stored, OperandStep (*step)(int), bool swizzled) {
  int bad = 0;
  for (int kc = 0; kc < wl::kD / 16; ++kc)
    for (int n = 0; n < wl::kKeys; ++n)
      for (int k = 0; k < 16; ++k) {
        const uint32_t read = swizzled ? KMajorSw128(step(kc), n, k) : KMajorPlain(step(kc), n, k);
        bad += read != stored[n * wl::kD + 16 * kc + k];
      }
  return bad;
}
int VMismatches(const std::vector<uint32_t>& stored, OperandStep (*step)(int)) {
  int bad = 0;
  for (int kk = 0; kk < wl::kKeys / 16; ++kk)
    for (int k = 0; k < 16; ++k)
      for (int n = 0; n < wl::kD; ++n) bad += MnMajorSw128(step(kk), k, n) != stored[(16 * kk + k) * wl::kD + n];
  return bad;
}

TEST(SmemLayout, WsTileStoresEveryElementOnceInsideTheTile) {
  const std::vector<uint32_t> at = StoredWsTile();
  const std::set<uint32_t> distinct(at.begin(), at.end());
  EXPECT_EQ(distinct.size(), at.size());
  EXPECT_LT(*distinct.rbegin(), static_cast<uint32_t>(2 * wl::kKeys * wl::kD));
}

TEST(SmemLayout, KStepsReadWhatTheProducerStored) {
  EXPECT_EQ(KMismatches(StoredWsTile(), wl::k_step, /*swizzled=*/true), 0);
}

TEST(SmemLayout, VStepsReadWhatTheProducerStored) { EXPECT_EQ(VMismatches(StoredWsTile(), wl::v_step), 0); }

template <int D>
int CoreMismatches(OperandStep (*step)(int)) {
  const std::vector<uint32_t> at = StoredCore<D>();
  int bad = 0;
  for (int s = 0; s < D / 16; ++s)
    for (int m = 0; m < 64; ++m)
      for (int k = 0; k < 16; ++k) bad += KMajorPlain(step(s), m, k) != at[m * D + 16 * s + k];
  return bad;
}
// Q's steps and the centroid tiles' (wgmma_two_halves_x64, D 64 and 128): the descriptors the GPU
// proved, so also a calibration of the model.
TEST(SmemLayout, CoreStepsReadTheCoreMatrices) {
  EXPECT_EQ(CoreMismatches<wl::kD>(wl::q_step), 0);
  EXPECT_EQ(CoreMismatches<64>(core_step<64>), 0);
  EXPECT_EQ(CoreMismatches<128>(core_step<128>), 0);
}

// Calibration: the model against the MN-major descriptor run 9's kernel proved on the GPU, V in
// core matrices as Q is (prefill_attention_ws.cu before run 35: start 32 D kk, leading 16 D,
// stride 128; its K took Q's steps, checked above).
TEST(SmemLayout, TheModelReadsVAsTheProvedUnswizzledDescriptorDid) {
  const std::vector<uint32_t> core = StoredQ();  // 64 rows of D in core matrices
  int bad = 0;
  for (int kk = 0; kk < 4; ++kk) {
    const OperandStep v{static_cast<uint32_t>(32 * wl::kD * kk), 16u * wl::kD, 128u};
    for (int k = 0; k < 16; ++k)
      for (int n = 0; n < wl::kD; ++n) bad += MnMajorPlain(v, k, n) != core[(16 * kk + k) * wl::kD + n];
  }
  EXPECT_EQ(bad, 0);
}

// The check fails where a step or the swizzle is wrong.
OperandStep KStrideHalved(int kc) { return {wl::k_step(kc).start, 16u, 512u}; }
OperandStep VOffsetsSwapped(int kk) { return {wl::v_step(kk).start, wl::v_step(kk).stride, wl::v_step(kk).leading}; }
OperandStep KNoAtomColumn(int kc) { return {static_cast<uint32_t>(32 * kc), 16u, 1024u}; }
TEST(SmemLayout, WrongStepsOrAMissingSwizzleAreCaught) {
  const std::vector<uint32_t> at = StoredWsTile();
  EXPECT_GT(KMismatches(at, KStrideHalved, true), 0);
  EXPECT_GT(KMismatches(at, KNoAtomColumn, true), 0);
  EXPECT_GT(KMismatches(at, wl::k_step, /*swizzled=*/false), 0);
  EXPECT_GT(VMismatches(at, VOffsetsSwapped), 0);
}

// A quarter-warp (8 consecutive copies) of the producer reads 128 contiguous, 128-aligned bytes
// of one row (4 whole sectors) and writes 8 distinct 16-byte bank groups.
TEST(SmemLayout, WsQuarterWarpsReadWholeSectorsAndWriteEveryBankGroup) {
  for (int first = 0; first < wl::kKeys * wl::kD / 8; first += 8) {
    std::set<int> groups;
    for (int l = first; l < first + 8; ++l) {
      EXPECT_EQ(wl::copy_row(l), wl::copy_row(first));
      EXPECT_EQ(wl::copy_dim(l), wl::copy_dim(first) + 8 * (l - first));
      groups.insert((wl::copy_element(l) * 2 / 16) % 8);
    }
    EXPECT_EQ(wl::copy_dim(first) % 64, 0) << "128-byte aligned within the row";
    EXPECT_EQ(groups.size(), 8u) << "copies " << first << "..";
  }
}

}  // namespace
}  // namespace squeezeserve::kernels::detail
