#include "server/batching_scheduler.h"

#include <algorithm>
#include <utility>

namespace squeezeserve::server {
namespace {
// How often a loop whose every stream is paused looks at their output buffers again.
constexpr absl::Duration kPausedPoll = absl::Milliseconds(5);
}  // namespace

BatchingScheduler::BatchingScheduler(WorkerPool* pool, const std::atomic<Engine*>* engine, BatchingOptions options)
    : pool_(pool), engine_(engine), options_(options) {
  loop_ = std::thread([this] { Loop(); });
}

BatchingScheduler::~BatchingScheduler() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  loop_.join();
}

absl::Status BatchingScheduler::Submit(std::unique_ptr<Generation> generation, GenerationSink* sink) {
  // std::function needs a copyable callable; the job moves the generation out when it runs, so its
  // KV is owned by the batch (and freed when the stream leaves), not by the job object.
  auto holder = std::make_shared<std::unique_ptr<Generation>>(std::move(generation));
  QueuedJob job;
  job.run = [this, holder, sink] { Join(std::move(*holder), sink); };
  job.abandoned = [sink] { return sink->cancelled(); };
  job.withdrawn = [sink] { sink->OnFinish(absl::CancelledError("cancelled while queued")); };
  job.priority = sink->priority();
  if (!pool_->Enqueue(std::move(job))) {
    return absl::ResourceExhaustedError(
        "all generation slots are busy and the wait queue is full (max_concurrent_streams, "
        "max_queued_requests); retry later");
  }
  return absl::OkStatus();
}

void BatchingScheduler::Join(std::unique_ptr<Generation> generation, GenerationSink* sink) {
  absl::Notification left;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      generation.reset();
      sink->OnFinish(absl::UnavailableError("the server is shutting down"));
      return;
    }
    joining_.push_back(Stream{std::move(generation), sink, &left, next_sequence_++, false});
  }
  left.WaitForNotification();  // holds the pool slot while the stream is in the batch
}

void BatchingScheduler::Leave(Stream& stream, const absl::Status& status) {
  stream.sink->OnFinish(status);  // the last touch of the sink
  stream.generation.reset();      // free the KV before the slot
  stream.left->Notify();
}

void BatchingScheduler::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (running_.empty()) {
        mu_.Await(absl::Condition(
            +[](BatchingScheduler* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
              return s->stopping_ || !s->joining_.empty();
            },
            this));
      }
      if (stopping_ && running_.empty() && joining_.empty()) return;
      // Streams join between steps, in the order the pool started them (priority, then FIFO).
      while (!joining_.empty()) {
        running_.push_back(std::move(joining_.front()));
        joining_.pop_front();
        running_.back().sink->OnStart();
      }
    }
    if (!Step()) {
      // Every stream waits for its client: idle briefly (new streams still wake the loop).
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(
                               +[](BatchingScheduler* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
                                 return s->stopping_ || !s->joining_.empty();
                               },
                               this),
                           kPausedPoll);
    }
  }
}

bool BatchingScheduler::Step() {
  // Cancellation, deadlines and stalled clients: end those streams before spending a forward pass on
  // them; pause those whose output buffer is full.
  const absl::Time now = absl::Now();
  std::vector<Stream*> ready;
  for (Stream& stream : running_) {
    if (stream.sink->cancelled()) {
      Leave(stream, absl::CancelledError("generation cancelled"));
      continue;
    }
    if (stream.sink->backlog() < static_cast<size_t>(options_.max_backlog_messages)) {
      stream.paused_since = absl::InfiniteFuture();
      ready.push_back(&stream);
      continue;
    }
    if (stream.paused_since == absl::InfiniteFuture()) stream.paused_since = now;
    if (now - stream.paused_since >= options_.stall_timeout) {
      Leave(stream, StalledStatus(StallPolicy{options_.max_backlog_messages, options_.stall_timeout}));
    }
  }
  if (ready.empty()) {
    running_.erase(std::remove_if(running_.begin(), running_.end(), [](const Stream& s) { return !s.generation; }),
                   running_.end());
    return false;
  }

  // Every decoding stream, then prefill chunks by priority and join order within the token budget:
  // the first always runs; later ones run while they fit, so a short new query is not held behind
  // the chunks of a long one (which keeps its turn: it is first until it is done).
  std::vector<Stream*> batch, prefills;
  for (Stream* stream : ready) (stream->prefilled ? batch : prefills).push_back(stream);
  std::stable_sort(prefills.begin(), prefills.end(), [](const Stream* a, const Stream* b) {
    return a->sink->priority() > b->sink->priority();
  });
  int64_t budget = options_.max_prefill_tokens_per_step;
  for (size_t i = 0; i < prefills.size(); ++i) {
    const int64_t tokens = prefills[i]->generation->next_step_tokens();
    if (i > 0 && tokens > budget) continue;
    budget -= tokens;
    batch.push_back(prefills[i]);
  }

  if (options_.on_step) options_.on_step(batch.size());
  std::vector<Generation*> generations;
  for (Stream* stream : batch) generations.push_back(stream->generation.get());
  std::vector<absl::StatusOr<TokenStep>> results;
  Engine* engine = engine_->load();
  if (engine == nullptr) {  // generations exist only once the engine has loaded; never crash on it
    results.assign(batch.size(), absl::StatusOr<TokenStep>(absl::UnavailableError("the model is not loaded")));
  } else {
    engine->StepBatch(absl::MakeConstSpan(generations), &results);
  }

  for (size_t i = 0; i < batch.size(); ++i) {
    Stream& stream = *batch[i];
    const absl::StatusOr<TokenStep>& step = i < results.size()
                                                ? results[i]
                                                : absl::StatusOr<TokenStep>(absl::InternalError("no step result"));
    if (!step.ok()) {
      Leave(stream, step.status());
      continue;
    }
    if (step->prefill_only) continue;  // a chunk of a long query: it stays a prefill
    stream.prefilled = true;
    stream.sink->OnToken(*step, stream.generation->stats());
    if (step->finish != FinishReason::kNone) Leave(stream, absl::OkStatus());
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(), [](const Stream& s) { return !s.generation; }),
                 running_.end());
  return true;
}

}  // namespace squeezeserve::server
