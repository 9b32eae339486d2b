// A server reactor base that owns the "one outstanding write per stream" rule. Producers on any thread
// call Send(); messages are written in order, one at a time, and FinishAfterWrites() ends the RPC once
// the queue has drained. Progress reports may be marked replaceable: while a write is in flight only
// the newest waiting one is kept.
//
// Lifetime rule: FinishAfterWrites() must be the producer's last touch of the reactor; gRPC may delete
// it (OnDone) right after. Derived classes delete themselves in OnDone().
#pragma once

#include <atomic>
#include <cstddef>
#include <deque>
#include <string>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/synchronization/mutex.h"
#include "server/status_map.h"

namespace squeezeserve::server {

template <typename Base, typename Response>
class OutboxReactor : public Base {
 public:
  OutboxReactor(grpc::CallbackServerContext* context, std::string method, StatusCounter* counter)
      : context_(context), method_(std::move(method)), counter_(counter) {}

  // True once the client cancelled or the deadline passed.
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

  void Send(Response message, bool replaceable = false) {
    {
      absl::MutexLock lock(&mu_);
      if (broken_ || finish_requested_) return;
      if (write_in_flight_) {
        if (replaceable && !queue_.empty() && queue_.back().second) {
          queue_.back().first = std::move(message);
        } else {
          queue_.emplace_back(std::move(message), replaceable);
        }
        return;
      }
      in_flight_ = std::move(message);
      write_in_flight_ = true;
    }
    this->StartWrite(&in_flight_);
  }

  // Blocks the calling worker while more than `max_queued` messages wait (backpressure from a slow
  // client); returns early on cancellation.
  void WaitForRoom(size_t max_queued) {
    absl::MutexLock lock(&mu_);
    auto has_room = [this, max_queued]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return queue_.size() <= max_queued || broken_ || cancelled_.load();
    };
    mu_.Await(absl::Condition(&has_room));
  }

  // Ends the RPC with `status` after the queued messages. Counts the status under this RPC's name; a
  // cancelled call counts as CANCELLED or DEADLINE_EXCEEDED, which is what the client sees.
  void FinishAfterWrites(grpc::Status status) {
    if (cancelled()) {
      bool deadline_passed = context_->deadline() <= std::chrono::system_clock::now();
      status = grpc::Status(deadline_passed ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED,
                            deadline_passed ? "deadline exceeded" : "cancelled by the client");
    }
    if (counter_ != nullptr) counter_->Count(method_, status.error_code());
    {
      absl::MutexLock lock(&mu_);
      finish_requested_ = true;
      final_status_ = status;
      if (write_in_flight_) return;  // OnWriteDone finishes once the queue drains
      queue_.clear();
      finish_called_ = true;
    }
    this->Finish(std::move(status));
  }

  // For errors before any message: adds RESOURCE_EXHAUSTED's retry hint etc.
  grpc::CallbackServerContext* context() const { return context_; }

 protected:
  void OnWriteDone(bool ok) override {
    bool start_next = false;
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (!ok) {
        broken_ = true;  // the stream is gone (cancel, deadline, disconnect)
        queue_.clear();
      }
      if (!queue_.empty()) {
        in_flight_ = std::move(queue_.front().first);
        queue_.pop_front();
        write_in_flight_ = true;
        start_next = true;
      } else if (finish_requested_ && !finish_called_) {
        finish_called_ = true;
        finish = true;
      }
    }
    if (start_next) {
      this->StartWrite(&in_flight_);
    } else if (finish) {
      this->Finish(final_status_);  // the argument is copied before Finish can trigger OnDone
    }
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);  // wakes WaitForRoom
    cancelled_.store(true, std::memory_order_release);
  }

 private:
  grpc::CallbackServerContext* const context_;
  const std::string method_;
  StatusCounter* const counter_;
  std::atomic<bool> cancelled_{false};

  absl::Mutex mu_;
  Response in_flight_;  // the message being written; only touched by the side that owns the write
  std::deque<std::pair<Response, bool>> queue_ ABSL_GUARDED_BY(mu_);  // (message, replaceable)
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_;
};

}  // namespace squeezeserve::server
