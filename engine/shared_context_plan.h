// Which dense questions of a decode step read their stored context together, and where each query
// row goes (docs/attention.md "Questions on one document"). Plain C++, tested on the CPU
// (tests/engine/shared_context_plan_test.cc); KernelAttention uploads the plan with the step.
#pragma once

#include <cstdint>
#include <vector>

namespace squeezeserve {

struct SharedContextPlan {
  // Members (rows of the step's decode queries) per bundle: the members on one context, in order,
  // at most `slots` a bundle.
  std::vector<std::vector<int64_t>> bundles;
  // Members per bundle in the launch: the largest bundle's size (a bundle's group is slots x G).
  int64_t slots = 0;
  // Per bundle query row, in (bundle, KV head, slot, group head) order: the member query row it
  // reads (member x H + KV head x G + group head). A short bundle's spare slots repeat its last
  // member: those rows are computed and never read.
  std::vector<int64_t> query_rows;
  // Per member query row (member x H + head): its row among the bundles' query rows.
  std::vector<int32_t> output_rows;

  bool empty() const { return bundles.empty(); }
};

// contexts[i]: what identifies member i's context (equal pointers: one context). group: the
// model's query heads per KV head; max_group: the most a launch takes (kernels::kMaxDecodeGroup),
// so a bundle holds at most max_group / group members. Empty when no bundle would hold two.
SharedContextPlan PlanSharedContext(const std::vector<const void*>& contexts, int64_t num_kv_heads, int64_t group,
                                    int64_t max_group);

}  // namespace squeezeserve
