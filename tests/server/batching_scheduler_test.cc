// BatchingScheduler with a fake engine (no model): every stream gets its tokens in order and exactly
// one OnFinish, a cancellation takes effect before the next step, a failing generation ends alone,
// and every pool slot is given back.
#include "server/batching_scheduler.h"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace squeezeserve::server {
namespace {

// Emits tokens first_token, first_token + 1, ... ; fails at step `fail_at` when >= 0.
class FakeGeneration : public Generation {
 public:
  FakeGeneration(int first_token, int length, int fail_at = -1)
      : next_(first_token), left_(length), fail_at_(fail_at) {}
  absl::StatusOr<TokenStep> Next() override {
    if (left_ == 0) return absl::FailedPreconditionError("finished");
    if (steps_++ == fail_at_) {
      left_ = 0;
      return absl::InternalError("fake failure");
    }
    TokenStep step;
    step.token = next_++;
    if (--left_ == 0) step.finish = FinishReason::kLength;
    ++stats_.completion_tokens;
    return step;
  }
  const GenerationStats& stats() const override { return stats_; }

 private:
  int next_, left_, fail_at_, steps_ = 0;
  GenerationStats stats_;
};

class FakeEngine : public Engine {
 public:
  const ModelInfo& model_info() const override { return info_; }
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view, bool) const override {
    return absl::UnimplementedError("fake");
  }
  std::string Decode(absl::Span<const int32_t>) const override { return ""; }
  absl::StatusOr<std::shared_ptr<const Context>> Ingest(std::string, std::vector<int32_t>, const IndexOptions&,
                                                        const ProgressFn&, const CancelFn&) override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<std::unique_ptr<Generation>> StartGeneration(std::shared_ptr<const Context>, std::vector<int32_t>,
                                                              const SamplingOptions&,
                                                              const AttentionOptions&) override {
    return absl::UnimplementedError("fake");
  }
  absl::Status SaveContext(const Context&, const std::string&) const override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<std::shared_ptr<const Context>> LoadContext(const std::string&, const std::string&) const override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<std::shared_ptr<const Context>> MoveContext(const Context&, MemoryTier) const override {
    return absl::UnimplementedError("fake");
  }

 private:
  ModelInfo info_;
};

class RecordingSink : public GenerationSink {
 public:
  explicit RecordingSink(int cancel_after = -1) : cancel_after_(cancel_after) {}
  bool cancelled() const override {
    absl::MutexLock lock(&mu_);
    return cancel_.load() || (cancel_after_ >= 0 && static_cast<int>(tokens_.size()) >= cancel_after_);
  }
  void Cancel() { cancel_ = true; }
  void OnStart() override { started_ = true; }
  void OnToken(const TokenStep& step, const GenerationStats&) override {
    absl::MutexLock lock(&mu_);
    tokens_.push_back(step.token);
  }
  void OnFinish(const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    ++finishes_;
    status_ = status;
  }
  // Waits until OnFinish was called; returns (status, tokens).
  std::pair<absl::Status, std::vector<int>> Await() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(+[](int* finishes) { return *finishes > 0; }, &finishes_));
    return {status_, tokens_};
  }
  int finishes() const {
    absl::MutexLock lock(&mu_);
    return finishes_;
  }
  bool started() const { return started_; }

 private:
  const int cancel_after_;
  mutable absl::Mutex mu_;
  std::vector<int> tokens_;
  int finishes_ = 0;
  absl::Status status_;
  std::atomic<bool> started_{false};
  std::atomic<bool> cancel_{false};
};

std::vector<int> Range(int first, int n) {
  std::vector<int> out;
  for (int i = 0; i < n; ++i) out.push_back(first + i);
  return out;
}

// Waits (bounded) until the pool has no job running or waiting: every slot was given back.
bool PoolDrains(const WorkerPool& pool) {
  for (int i = 0; i < 1000; ++i) {
    if (pool.busy() == 0 && pool.queued() == 0) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return false;
}

TEST(BatchingSchedulerTest, StreamsGetTheirTokensCancellationAndFailuresEndOnlyTheirStream) {
  FakeEngine engine;
  std::atomic<Engine*> engine_ptr{&engine};
  WorkerPool pool(/*num_workers=*/8, /*max_queued=*/8);
  auto scheduler = std::make_unique<BatchingScheduler>(&pool, &engine_ptr, BatchingOptions{});
  std::vector<std::unique_ptr<RecordingSink>> sinks;
  // 0-9: plain streams of different lengths; 10: cancelled after 2 tokens; 11: fails at step 3.
  for (int i = 0; i < 12; ++i) {
    sinks.push_back(std::make_unique<RecordingSink>(i == 10 ? 2 : -1));
    auto generation =
        std::make_unique<FakeGeneration>(100 * i, i == 10 ? 1000 : 5 + i, /*fail_at=*/i == 11 ? 3 : -1);
    ASSERT_TRUE(scheduler->Submit(std::move(generation), sinks.back().get()).ok()) << i;
  }
  for (int i = 0; i < 10; ++i) {
    auto [status, tokens] = sinks[i]->Await();
    EXPECT_TRUE(status.ok()) << i << ": " << status;
    EXPECT_EQ(tokens, Range(100 * i, 5 + i)) << i;
    EXPECT_TRUE(sinks[i]->started());
  }
  auto [cancelled, cancelled_tokens] = sinks[10]->Await();
  EXPECT_EQ(cancelled.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(cancelled_tokens, Range(1000, 2)) << "no step after the cancellation was seen";
  auto [failed, failed_tokens] = sinks[11]->Await();
  EXPECT_EQ(failed.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(failed_tokens, Range(1100, 3));
  EXPECT_TRUE(PoolDrains(pool)) << "a stream kept its slot";
  for (const auto& sink : sinks) EXPECT_EQ(sink->finishes(), 1);
}

TEST(BatchingSchedulerTest, RefusedWhenSlotsAndQueueAreFull) {
  FakeEngine engine;
  std::atomic<Engine*> engine_ptr{&engine};
  WorkerPool pool(/*num_workers=*/1, /*max_queued=*/0);
  // An endless stream holds the only slot until the client cancels it.
  RecordingSink holder;
  BatchingScheduler scheduler(&pool, &engine_ptr, BatchingOptions{});
  ASSERT_TRUE(scheduler.Submit(std::make_unique<FakeGeneration>(0, 1 << 30), &holder).ok());
  while (!holder.started()) absl::SleepFor(absl::Milliseconds(1));
  RecordingSink refused;
  EXPECT_EQ(scheduler.Submit(std::make_unique<FakeGeneration>(0, 1), &refused).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(refused.finishes(), 0) << "a refused stream's sink is never called";
  holder.Cancel();
  EXPECT_EQ(holder.Await().first.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(PoolDrains(pool));
}

}  // namespace
}  // namespace squeezeserve::server
