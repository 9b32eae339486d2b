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

// Emits tokens first_token, first_token + 1, ... ; fails at step `fail_at` when >= 0. With a prompt,
// first prefills it in chunks of `chunk` tokens (prefill_only steps), as a chunked query prefill.
class FakeGeneration : public Generation {
 public:
  FakeGeneration(int first_token, int length, int fail_at = -1, int prompt = 1, int chunk = 1 << 30)
      : next_(first_token), left_(length), fail_at_(fail_at), prompt_left_(prompt), chunk_(chunk) {}
  int64_t next_step_tokens() const override { return prompt_left_ > 0 ? std::min(prompt_left_, chunk_) : 1; }
  absl::StatusOr<TokenStep> Next() override {
    if (left_ == 0) return absl::FailedPreconditionError("finished");
    prompt_left_ -= std::min(prompt_left_, chunk_);
    if (prompt_left_ > 0) {
      TokenStep step;
      step.prefill_only = true;
      return step;
    }
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
  int prompt_left_, chunk_;
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
  absl::Status SaveContext(const Context&, const std::string&, const SaveProgressFn&) const override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<std::shared_ptr<const Context>> LoadContext(const std::string&, const std::string&) const override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<std::shared_ptr<const Context>> MoveContext(const Context&, MemoryTier) const override {
    return absl::UnimplementedError("fake");
  }
  // Records each step: the generations in it and the tokens they feed.
  void StepBatch(absl::Span<Generation* const> generations, std::vector<absl::StatusOr<TokenStep>>* out) override {
    Step step;
    for (Generation* g : generations) step.emplace_back(g, g->next_step_tokens());
    {
      absl::MutexLock lock(&mu_);
      steps_.push_back(std::move(step));
    }
    if (step_time_ > absl::ZeroDuration()) absl::SleepFor(step_time_);
    Engine::StepBatch(generations, out);
  }
  void set_step_time(absl::Duration d) { step_time_ = d; }
  using Step = std::vector<std::pair<const Generation*, int64_t>>;
  std::vector<Step> steps() const {
    absl::MutexLock lock(&mu_);
    return steps_;
  }

 private:
  ModelInfo info_;
  absl::Duration step_time_ = absl::ZeroDuration();
  mutable absl::Mutex mu_;
  std::vector<Step> steps_;
};

class RecordingSink : public GenerationSink {
 public:
  explicit RecordingSink(int cancel_after = -1) : cancel_after_(cancel_after) {}
  bool cancelled() const override {
    absl::MutexLock lock(&mu_);
    return cancel_.load() || (cancel_after_ >= 0 && static_cast<int>(tokens_.size()) >= cancel_after_);
  }
  void Cancel() { cancel_ = true; }
  // What the stream's output buffer holds (set by the test: a client that does or does not read).
  void SetBacklog(size_t backlog) { backlog_ = backlog; }
  size_t backlog() const override { return backlog_.load(); }
  int tokens() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(tokens_.size());
  }
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
  std::atomic<size_t> backlog_{0};
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

TEST(BatchingSchedulerTest, AStreamWhoseClientDoesNotReadSitsOutWhileTheOthersGoOn) {
  FakeEngine engine;
  std::atomic<Engine*> engine_ptr{&engine};
  WorkerPool pool(/*num_workers=*/4, /*max_queued=*/4);
  BatchingOptions options;
  options.max_backlog_messages = 8;
  options.stall_timeout = absl::Seconds(60);
  BatchingScheduler scheduler(&pool, &engine_ptr, options);
  RecordingSink slow, healthy;
  slow.SetBacklog(8);  // its buffer is full: the client stopped reading
  ASSERT_TRUE(scheduler.Submit(std::make_unique<FakeGeneration>(0, 50), &slow).ok());
  ASSERT_TRUE(scheduler.Submit(std::make_unique<FakeGeneration>(1000, 200), &healthy).ok());
  auto [status, tokens] = healthy.Await();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(tokens.size(), 200u) << "the healthy stream must not wait for the slow one";
  EXPECT_EQ(slow.tokens(), 0) << "a paused stream takes no step";
  EXPECT_EQ(slow.finishes(), 0);
  slow.SetBacklog(0);  // it reads again
  auto [slow_status, slow_tokens] = slow.Await();
  EXPECT_TRUE(slow_status.ok()) << slow_status;
  EXPECT_EQ(slow_tokens, Range(0, 50));
  EXPECT_TRUE(PoolDrains(pool));
}

TEST(BatchingSchedulerTest, AStalledStreamEndsPastTheTimeoutAndFreesItsSlot) {
  FakeEngine engine;
  std::atomic<Engine*> engine_ptr{&engine};
  WorkerPool pool(/*num_workers=*/1, /*max_queued=*/4);
  BatchingOptions options;
  options.max_backlog_messages = 8;
  options.stall_timeout = absl::Milliseconds(200);
  BatchingScheduler scheduler(&pool, &engine_ptr, options);
  RecordingSink stalled, next;
  stalled.SetBacklog(100);
  const absl::Time start = absl::Now();
  ASSERT_TRUE(scheduler.Submit(std::make_unique<FakeGeneration>(0, 50), &stalled).ok());
  ASSERT_TRUE(scheduler.Submit(std::make_unique<FakeGeneration>(7, 3), &next).ok()) << "waits for the one slot";
  auto [status, tokens] = stalled.Await();
  EXPECT_TRUE(IsStalled(status)) << status;
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  auto [next_status, next_tokens] = next.Await();
  EXPECT_TRUE(next_status.ok()) << "the slot came free: " << next_status;
  EXPECT_EQ(next_tokens, Range(7, 3));
  EXPECT_TRUE(PoolDrains(pool));
  EXPECT_FALSE(IsStalled(absl::ResourceExhaustedError("other")));
}

// A long query prefills in chunks, one per step, beside the decode steps of the running streams; a
// short query that arrives meanwhile fits beside the chunk instead of waiting for the whole prefill
// (nor behind a second long query whose chunk does not fit).
TEST(BatchingSchedulerTest, ALongPromptIsPrefilledInChunksInterleavedWithDecode) {
  FakeEngine engine;
  engine.set_step_time(absl::Milliseconds(1));
  std::atomic<Engine*> engine_ptr{&engine};
  WorkerPool pool(/*num_workers=*/4, /*max_queued=*/4);
  BatchingOptions options;
  options.max_prefill_tokens_per_step = 64;
  BatchingScheduler scheduler(&pool, &engine_ptr, options);
  RecordingSink running, long_prompt, short_prompt;
  auto running_generation = std::make_unique<FakeGeneration>(0, 1 << 20);
  const Generation* running_ptr = running_generation.get();
  ASSERT_TRUE(scheduler.Submit(std::move(running_generation), &running).ok());
  while (running.tokens() < 3) absl::SleepFor(absl::Milliseconds(1));
  auto long_generation = std::make_unique<FakeGeneration>(500, 2, -1, /*prompt=*/1000, /*chunk=*/32);
  const Generation* long_ptr = long_generation.get();
  ASSERT_TRUE(scheduler.Submit(std::move(long_generation), &long_prompt).ok());
  // A second long prompt whose chunk does not fit beside the first one's: it waits its turn.
  RecordingSink second_long;
  ASSERT_TRUE(scheduler.Submit(std::make_unique<FakeGeneration>(700, 2, -1, /*prompt=*/1000, /*chunk=*/48),
                               &second_long).ok());
  absl::SleepFor(absl::Milliseconds(5));
  auto short_generation = std::make_unique<FakeGeneration>(900, 2, -1, /*prompt=*/16, /*chunk=*/32);
  const Generation* short_ptr = short_generation.get();
  ASSERT_TRUE(scheduler.Submit(std::move(short_generation), &short_prompt).ok());
  EXPECT_TRUE(long_prompt.Await().first.ok());
  EXPECT_TRUE(short_prompt.Await().first.ok());
  EXPECT_TRUE(second_long.Await().first.ok());
  running.Cancel();
  running.Await();

  int long_steps = 0, short_first_step = -1, long_last_step = -1;
  const std::vector<FakeEngine::Step> steps = engine.steps();
  for (size_t i = 0; i < steps.size(); ++i) {
    int64_t prefill_tokens = 0;
    bool has_long = false;
    for (const auto& [generation, tokens] : steps[i]) {
      if (tokens > 1) prefill_tokens += tokens;
      if (generation == long_ptr && tokens > 1) {
        has_long = true;
        ++long_steps;
        long_last_step = static_cast<int>(i);
      }
      if (generation == short_ptr && short_first_step < 0) short_first_step = static_cast<int>(i);
    }
    EXPECT_LE(prefill_tokens, 64) << "step " << i << " went over the token budget";
    if (has_long) {
      bool running_decoded = false;
      for (const auto& step : steps[i]) running_decoded |= step.first == running_ptr;
      EXPECT_TRUE(running_decoded) << "step " << i << ": the running stream sat out a prefill chunk";
    }
  }
  EXPECT_EQ(long_steps, (1000 + 31) / 32) << "one chunk per step";
  EXPECT_GE(short_first_step, 0);
  EXPECT_LT(short_first_step, long_last_step) << "the short query waited for the whole long prefill";
  EXPECT_TRUE(PoolDrains(pool));
}

}  // namespace
}  // namespace squeezeserve::server
