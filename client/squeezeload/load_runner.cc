#include "client/squeezeload/load_runner.h"

#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "absl/time/clock.h"
#include "client/squeezeload/arrivals.h"
#include "client/squeezeload/openai_client.h"
#include "client/squeezeload/stream_client.h"
#include "client/squeezeload/synthetic.h"

namespace squeezeload {
namespace {

// One phase (warm-up or measured): `workers` threads take send times from `schedule` and run requests.
std::vector<RequestRecord> RunPhase(Target& target, int workers, ArrivalSchedule& schedule, uint64_t seed,
                                    absl::Duration timeout) {
  RequestSampler sampler(target.workload, seed);
  std::mutex mu;  // guards sampler and records
  std::vector<RequestRecord> records;
  const absl::Time phase_start = absl::Now();
  auto worker = [&] {
    while (std::optional<absl::Time> at = schedule.Next()) {
      absl::SleepFor(*at - absl::Now());  // no-op when the arrival is already due
      RequestSpec spec;
      {
        std::lock_guard<std::mutex> lock(mu);
        spec = sampler.Next();
      }
      const std::string& context_id = target.workload.contexts[size_t(spec.context_index)].id;
      const std::string question =
          spec.question_index >= 0 ? target.workload.questions[size_t(spec.question_index)].text : "";
      const double sent_s = absl::ToDoubleSeconds(absl::Now() - phase_start);
      RequestRecord record;
      if (target.openai) {
        std::string prompt = question.empty() ? SyntheticText(spec.query_tokens, spec.seed) : question;
        if (target.openai_inline) prompt = target.context_texts[size_t(spec.context_index)] + prompt;
        record = RunOpenAiCompletion(*target.openai, prompt, target.openai_inline ? "" : context_id, spec, timeout);
        if (!record.ok) spdlog::debug("{}: request failed: {}", target.openai->base_url, record.error);
      } else {
        const auto query = question.empty() ? SyntheticTokens(spec.query_tokens, target.vocab_size, spec.seed)
                                            : std::vector<int32_t>();
        Replica& replica = target.replicas[target.router->Pick(context_id)];
        record = RunGenerate(*replica.stub, context_id, spec, query, question, timeout);
        if (!record.ok) spdlog::debug("{}: request failed: {}", replica.address, record.error);
      }
      record.context_id = context_id;
      record.question_index = spec.question_index;
      record.sent_s = sent_s;
      std::lock_guard<std::mutex> lock(mu);
      records.push_back(std::move(record));
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < workers; ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  return records;
}

}  // namespace

LevelResult RunLevel(Target& target, const LoadLevel& level, const RunLimits& limits) {
  const int workers = std::max(1, level.concurrency);
  if (limits.warmup_requests > 0) {
    // Warm-up is closed loop at the level's concurrency and never longer than the measured phase.
    ArrivalSchedule warmup(0, limits.seed, absl::Now(), absl::Now() + limits.duration, limits.warmup_requests);
    RunPhase(target, workers, warmup, limits.seed ^ 0x9e3779b97f4a7c15ull, limits.request_timeout);
  }
  const absl::Time start = absl::Now();
  ArrivalSchedule schedule(level.request_rate, limits.seed, start, start + limits.duration, limits.num_requests);
  LevelResult result;
  result.records = RunPhase(target, workers, schedule, limits.seed, limits.request_timeout);
  result.duration_s = absl::ToDoubleSeconds(absl::Now() - start);
  return result;
}

}  // namespace squeezeload
