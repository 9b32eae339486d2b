#include "engine/shared_context_plan.h"

#include <algorithm>
#include <map>

namespace squeezeserve {

SharedContextPlan PlanSharedContext(const std::vector<const void*>& contexts, int64_t num_kv_heads, int64_t group,
                                    int64_t max_group) {
  SharedContextPlan plan;
  const int64_t capacity = group > 0 ? max_group / group : 0;
  if (capacity < 2) return plan;
  std::map<const void*, size_t> filling;  // a context -> the bundle being filled
  for (size_t i = 0; i < contexts.size(); ++i) {
    auto it = filling.find(contexts[i]);
    if (it == filling.end() || static_cast<int64_t>(plan.bundles[it->second].size()) == capacity) {
      it = filling.insert_or_assign(contexts[i], plan.bundles.size()).first;
      plan.bundles.emplace_back();
    }
    plan.bundles[it->second].push_back(static_cast<int64_t>(i));
  }
  if (plan.bundles.size() == contexts.size()) return SharedContextPlan{};  // nothing shared
  for (const std::vector<int64_t>& bundle : plan.bundles)
    plan.slots = std::max<int64_t>(plan.slots, static_cast<int64_t>(bundle.size()));
  const int64_t H = num_kv_heads * group;
  plan.query_rows.resize(plan.bundles.size() * static_cast<size_t>(num_kv_heads * plan.slots * group));
  plan.output_rows.assign(contexts.size() * static_cast<size_t>(H), -1);
  for (size_t k = 0; k < plan.bundles.size(); ++k) {
    const std::vector<int64_t>& bundle = plan.bundles[k];
    for (int64_t h = 0; h < num_kv_heads; ++h) {
      for (int64_t slot = 0; slot < plan.slots; ++slot) {
        const int64_t member = bundle[std::min<size_t>(static_cast<size_t>(slot), bundle.size() - 1)];
        for (int64_t g = 0; g < group; ++g) {
          const int64_t row = ((static_cast<int64_t>(k) * num_kv_heads + h) * plan.slots + slot) * group + g;
          plan.query_rows[row] = member * H + h * group + g;
          if (slot < static_cast<int64_t>(bundle.size())) plan.output_rows[member * H + h * group + g] = static_cast<int32_t>(row);
        }
      }
    }
  }
  return plan;
}

}  // namespace squeezeserve
