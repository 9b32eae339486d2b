// Which prefill kernel a launch runs (kernels/prefill_attention.h: prefill_auto_splits,
// prefill_runs_warp_specialized), on the CPU: the engine's default (PrefillKernel::kWhereRangesAreLong)
// must give a long query's launch, whose row tiles fill most of the device (each CTA streams half its
// head's selection or more), to the warp-specialized kernel and a question's finely split launch to
// the mma.sync kernel, for the shapes the product serves and the server's 512-token prefill chunks.
#include "kernels/prefill_attention.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace squeezeserve::kernels {
namespace {

constexpr int32_t kH100Sms = 132;

// A launch's CTAs before splitting: row tiles (query tokens x group, 128 rows a tile) x KV heads x batch.
int64_t Ctas(int64_t query_tokens, int64_t group, int64_t kv_heads, int64_t batch = 1) {
  return (query_tokens * group + 127) / 128 * kv_heads * batch;
}

TEST(PrefillKernelChoice, AutoSplitsFillTheDeviceTwiceOver) {
  EXPECT_EQ(prefill_auto_splits(Ctas(64, 4, 8), kH100Sms), kMaxPrefillSplits);  // Llama-3 question: 16 CTAs
  EXPECT_EQ(prefill_auto_splits(Ctas(64, 1, 32), kH100Sms), 8);                 // Llama-2 question: 32 CTAs
  EXPECT_EQ(prefill_auto_splits(Ctas(512, 1, 32), kH100Sms), 2);                // 128 CTAs: under one wave
  EXPECT_EQ(prefill_auto_splits(Ctas(1024, 1, 32), kH100Sms), 1);               // 256 CTAs
  EXPECT_EQ(prefill_auto_splits(Ctas(1024, 4, 8), kH100Sms), 1);
  EXPECT_EQ(prefill_auto_splits(0, kH100Sms), kMaxPrefillSplits);  // no CTAs: never a division by zero
}

TEST(PrefillKernelChoice, WhereRangesAreLongTakesLongQueriesOnly) {
  const auto ws = [](PrefillKernel kernel, int64_t ctas) {
    return prefill_runs_warp_specialized(kernel, prefill_auto_splits(ctas, kH100Sms), /*available=*/true);
  };
  for (const int64_t group : {1, 4}) {
    const int64_t kv_heads = 32 / group;
    EXPECT_FALSE(ws(PrefillKernel::kWhereRangesAreLong, Ctas(30, group, kv_heads))) << group;
    EXPECT_FALSE(ws(PrefillKernel::kWhereRangesAreLong, Ctas(64, group, kv_heads))) << group;
    EXPECT_FALSE(ws(PrefillKernel::kWhereRangesAreLong, Ctas(256, group, kv_heads))) << group;  // 4 ways
    EXPECT_TRUE(ws(PrefillKernel::kWhereRangesAreLong, Ctas(512, group, kv_heads))) << group;   // the server's chunk
    EXPECT_TRUE(ws(PrefillKernel::kWhereRangesAreLong, Ctas(1024, group, kv_heads))) << group;
    EXPECT_TRUE(ws(PrefillKernel::kWhereRangesAreLong, Ctas(8192, group, kv_heads))) << group;
    // Launches are per sequence in the engine, but the rule is the launch's: 8 questions in one fill it.
    EXPECT_TRUE(ws(PrefillKernel::kWhereRangesAreLong, Ctas(64, group, kv_heads, /*batch=*/8))) << group;
    // The named kernels ignore the launch's size.
    EXPECT_TRUE(ws(PrefillKernel::kWarpSpecialized, Ctas(30, group, kv_heads))) << group;
    EXPECT_FALSE(ws(PrefillKernel::kMmaSync, Ctas(8192, group, kv_heads))) << group;
  }
}

TEST(PrefillKernelChoice, NeverWhereTheWarpSpecializedKernelCannotRun) {
  for (const PrefillKernel kernel :
       {PrefillKernel::kMmaSync, PrefillKernel::kWarpSpecialized, PrefillKernel::kWhereRangesAreLong})
    for (const int32_t splits : {1, 2, 16}) EXPECT_FALSE(prefill_runs_warp_specialized(kernel, splits, false));
}

}  // namespace
}  // namespace squeezeserve::kernels
