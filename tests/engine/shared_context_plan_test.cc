// The shared-context plan of a decode step (engine/shared_context_plan.h): bundles per context,
// and query/output row maps that send every member's query row to exactly one bundle row and back.
#include "engine/shared_context_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

namespace squeezeserve {
namespace {

int context_a, context_b;  // two distinct contexts: their addresses
const void* const A = &context_a;
const void* const B = &context_b;

// Every member row maps to a bundle row that reads it back; no two member rows share a bundle row;
// every bundle row reads a member of its own bundle (spare slots: the bundle's last member).
void ExpectRowMapsRoundTrip(const SharedContextPlan& plan, int64_t members, int64_t hkv, int64_t group) {
  const int64_t H = hkv * group;
  ASSERT_EQ(plan.output_rows.size(), static_cast<size_t>(members * H));
  ASSERT_EQ(plan.query_rows.size(), plan.bundles.size() * static_cast<size_t>(hkv * plan.slots * group));
  std::set<int32_t> used;
  for (int64_t r = 0; r < members * H; ++r) {
    const int32_t row = plan.output_rows[r];
    ASSERT_GE(row, 0) << "member row " << r;
    ASSERT_LT(static_cast<size_t>(row), plan.query_rows.size());
    EXPECT_EQ(plan.query_rows[row], r) << "member row " << r;
    EXPECT_TRUE(used.insert(row).second) << "bundle row " << row << " taken twice";
  }
  for (size_t row = 0; row < plan.query_rows.size(); ++row) {
    const int64_t bundle = static_cast<int64_t>(row) / (hkv * plan.slots * group);
    const int64_t member = plan.query_rows[row] / H;
    const std::vector<int64_t>& of = plan.bundles[bundle];
    EXPECT_NE(std::find(of.begin(), of.end(), member), of.end()) << "bundle row " << row;
    // The same KV head and group head as the member row it reads.
    EXPECT_EQ(plan.query_rows[row] % H, static_cast<int64_t>(row) / (plan.slots * group) % hkv * group +
                                            static_cast<int64_t>(row) % group);
  }
}

TEST(SharedContextPlanTest, BundlesQuestionsPerContextUpToTheLaunchesGroup) {
  // Llama-3: 8 KV heads, group 4, launches up to 16 query heads a KV head: 4 questions a bundle.
  const std::vector<const void*> contexts = {A, B, A, A, B, A, A};
  const SharedContextPlan plan = PlanSharedContext(contexts, 8, 4, 16);
  ASSERT_FALSE(plan.empty());
  const std::vector<std::vector<int64_t>> want = {{0, 2, 3, 5}, {1, 4}, {6}};
  EXPECT_EQ(plan.bundles, want);
  EXPECT_EQ(plan.slots, 4);
  ExpectRowMapsRoundTrip(plan, 7, 8, 4);
  // The short bundles repeat their last member in the spare slots.
  const int64_t per_bundle = 8 * 4 * 4;
  EXPECT_EQ(plan.query_rows[per_bundle + 3 * 4] / 32, 4);      // bundle 1, KV head 0, slot 3
  EXPECT_EQ(plan.query_rows[2 * per_bundle + 2 * 4] / 32, 6);  // bundle 2, KV head 0, slot 2
}

TEST(SharedContextPlanTest, MhaTakesSixteenQuestionsABundleAndOddGroupsTheirShare) {
  std::vector<const void*> contexts(20, A);
  const SharedContextPlan mha = PlanSharedContext(contexts, 32, 1, 16);
  ASSERT_EQ(mha.bundles.size(), 2u);
  EXPECT_EQ(mha.bundles[0].size(), 16u);
  EXPECT_EQ(mha.bundles[1].size(), 4u);
  EXPECT_EQ(mha.slots, 16);
  ExpectRowMapsRoundTrip(mha, 20, 32, 1);
  // Group 3 (the shipped small model): 5 a bundle.
  contexts.resize(6);
  const SharedContextPlan small = PlanSharedContext(contexts, 2, 3, 16);
  ASSERT_EQ(small.bundles.size(), 2u);
  EXPECT_EQ(small.slots, 5);
  ExpectRowMapsRoundTrip(small, 6, 2, 3);
}

TEST(SharedContextPlanTest, NothingSharedIsAnEmptyPlan) {
  EXPECT_TRUE(PlanSharedContext({A, B}, 8, 4, 16).empty());  // one question per context
  EXPECT_TRUE(PlanSharedContext({A}, 8, 4, 16).empty());
  EXPECT_TRUE(PlanSharedContext({}, 8, 4, 16).empty());
  EXPECT_TRUE(PlanSharedContext({A, A, A}, 8, 9, 16).empty());  // group 9: one question fills a launch's rows
  EXPECT_TRUE(PlanSharedContext({A, A}, 8, 0, 16).empty());
}

}  // namespace
}  // namespace squeezeserve
