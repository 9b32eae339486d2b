// A server reactor base that owns the "one outstanding write per stream" rule. Producers on any thread
// call Send(); messages are serialized (the service's methods are raw: server/request_codec.h) and
// written in order, one at a time, and FinishAfterWrites() ends the RPC once the queue has drained.
// Progress reports may be marked replaceable: while a write is in flight only the newest waiting one
// is kept. The queue is the stream's output buffer: backlog() tells a scheduler how far its client has
// fallen behind, so it can pause the stream instead of waiting for the client (server/batching_scheduler.h).
//
// A write that starts when the stream is idle is started on the WriteThread, not on the producer's
// thread (server/write_thread.h says why); the next ones start from OnWriteDone, on gRPC's threads.
//
// Lifetime rule: FinishAfterWrites() must be the producer's last touch of the reactor; gRPC may delete
// it (OnDone) right after. Derived classes delete themselves in OnDone(). A write posted to the
// WriteThread keeps the reactor alive: the call cannot finish while a write is in flight.
#pragma once

#include <atomic>
#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/request_codec.h"
#include "server/status_map.h"
#include "server/write_thread.h"

namespace squeezeserve::server {

template <typename Base, typename Response>
class OutboxReactor : public Base {
 public:
  // Called once a message has been written (true) or dropped because the stream broke (false).
  using Written = std::function<void(bool written)>;

  OutboxReactor(grpc::CallbackServerContext* context, std::string method, StatusCounter* counter,
                WriteThread* writer)
      : context_(context), method_(std::move(method)), counter_(counter), writer_(writer) {}

  // True once the client cancelled or the deadline passed.
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

  // Queues `message`. `written`, when set, is called on a gRPC thread once the message is on the
  // wire (or with false when the stream broke first): a fence, e.g. to learn that the call is alive.
  // It may call FinishAfterWrites (as its last touch of the reactor). At most one message with a
  // `written` callback may be outstanding at a time.
  void Send(const Response& message, bool replaceable = false, Written written = nullptr) {
    bool dropped = false;
    {
      absl::MutexLock lock(&mu_);
      dropped = broken_ || finish_requested_;
      if (!dropped) {
        if (write_in_flight_) {
          if (replaceable && written == nullptr && !queue_.empty() && queue_.back().replaceable) {
            queue_.back().bytes = SerializeMessage(message);
          } else {
            queue_.push_back(Entry{SerializeMessage(message), replaceable, std::move(written)});
          }
          return;
        }
        in_flight_ = SerializeMessage(message);
        in_flight_written_ = std::move(written);
        write_in_flight_ = true;
        written = nullptr;
      }
    }
    if (dropped) {  // the stream is broken or finishing; a fence learns it outside the lock
      if (written != nullptr) written(false);
      return;
    }
    writer_->Post([this] { this->StartWrite(&in_flight_); });
  }

  // Messages sent and not yet taken by the transport (the one being written included).
  size_t backlog() const {
    absl::MutexLock lock(&mu_);
    return queue_.size() + (write_in_flight_ ? 1 : 0);
  }

  // Blocks while backlog() >= `bound`, until the stream breaks or is cancelled or `timeout` passes;
  // false on the timeout.
  bool WaitForBacklogBelow(size_t bound, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto has_room = [this, bound]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return queue_.size() + (write_in_flight_ ? 1 : 0) < bound || broken_ || cancelled_.load();
    };
    return mu_.AwaitWithTimeout(absl::Condition(&has_room), timeout);
  }

  // Ends the RPC with `status` after the queued messages (once; later calls are ignored). Counts the
  // status under this RPC's name; a cancelled call counts as CANCELLED or DEADLINE_EXCEEDED, which is
  // what the client sees.
  void FinishAfterWrites(grpc::Status status) {
    if (cancelled()) {
      bool deadline_passed = context_->deadline() <= std::chrono::system_clock::now();
      status = grpc::Status(deadline_passed ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED,
                            deadline_passed ? "deadline exceeded" : "cancelled by the client");
    }
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_) return;
      finish_requested_ = true;
      final_status_ = status;
      if (counter_ != nullptr) counter_->Count(method_, status.error_code());
      if (write_in_flight_) return;  // OnWriteDone finishes once the queue drains
      queue_.clear();
      finish_called_ = true;
    }
    this->Finish(std::move(status));
  }

  // Cancels the call from the server side (a client that stopped reading): the write waiting on it
  // fails, which lets FinishAfterWrites complete instead of waiting for the client forever.
  void AbortCall() { context_->TryCancel(); }

  // For errors before any message: adds RESOURCE_EXHAUSTED's retry hint etc.
  grpc::CallbackServerContext* context() const { return context_; }

 protected:
  void OnWriteDone(bool ok) override {
    bool start_next = false;
    bool finish = false;
    std::vector<std::pair<Written, bool>> callbacks;
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (in_flight_written_ != nullptr) callbacks.emplace_back(std::move(in_flight_written_), ok);
      in_flight_written_ = nullptr;
      if (!ok) {
        broken_ = true;  // the stream is gone (cancel, deadline, disconnect)
        for (Entry& entry : queue_) {
          if (entry.written != nullptr) callbacks.emplace_back(std::move(entry.written), false);
        }
        queue_.clear();
      }
      if (!queue_.empty()) {
        in_flight_ = std::move(queue_.front().bytes);
        in_flight_written_ = std::move(queue_.front().written);
        queue_.pop_front();
        write_in_flight_ = true;  // claimed before the callbacks run: none of them can finish the call
        start_next = true;
      } else if (finish_requested_ && !finish_called_) {
        finish_called_ = true;
        finish = true;
      }
    }
    if (finish) {
      this->Finish(final_status_);  // the argument is copied before Finish can trigger OnDone
      return;
    }
    for (auto& [written, was_written] : callbacks) written(was_written);
    if (start_next) this->StartWrite(&in_flight_);
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);  // wakes WaitForBacklogBelow
    cancelled_.store(true, std::memory_order_release);
  }

 private:
  struct Entry {
    grpc::ByteBuffer bytes;
    bool replaceable = false;
    Written written;
  };

  grpc::CallbackServerContext* const context_;
  const std::string method_;
  StatusCounter* const counter_;
  WriteThread* const writer_;
  std::atomic<bool> cancelled_{false};

  mutable absl::Mutex mu_;
  grpc::ByteBuffer in_flight_;  // the message being written; only touched by the side that owns the write
  Written in_flight_written_ ABSL_GUARDED_BY(mu_);
  std::deque<Entry> queue_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_;
};

}  // namespace squeezeserve::server
