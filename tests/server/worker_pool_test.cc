// The worker pool's admission: run now, wait in the bounded queue (priority, FIFO), refuse beyond it,
// and withdraw abandoned waiters.
#include "server/worker_pool.h"

#include <atomic>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace squeezeserve::server {
namespace {

// Blocks one worker until released.
struct Blocker {
  absl::Notification started, release;
  QueuedJob Job() {
    QueuedJob job;
    job.run = [this] {
      started.Notify();
      release.WaitForNotification();
    };
    return job;
  }
};

bool WaitFor(const std::function<bool()>& condition) {
  for (int i = 0; i < 500; ++i) {  // 10 s, generous for a loaded CI machine
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

TEST(WorkerPool, QueuesBeyondTheWorkersAndRefusesBeyondTheQueue) {
  WorkerPool pool(/*num_workers=*/1, /*max_queued=*/2);
  Blocker blocker;
  ASSERT_TRUE(pool.Enqueue(blocker.Job()));
  blocker.started.WaitForNotification();
  std::atomic<int> ran{0};
  QueuedJob counted;
  counted.run = [&] { ++ran; };
  EXPECT_TRUE(pool.Enqueue(counted));
  EXPECT_TRUE(pool.Enqueue(counted));
  EXPECT_EQ(pool.queued(), 2);
  EXPECT_FALSE(pool.Enqueue(counted)) << "the queue holds 2";
  EXPECT_FALSE(pool.TrySubmit([] {})) << "TrySubmit never queues";
  blocker.release.Notify();
  EXPECT_TRUE(WaitFor([&] { return ran.load() == 2; }));
  EXPECT_EQ(pool.queued(), 0);
}

TEST(WorkerPool, HigherPriorityFirstThenArrivalOrder) {
  WorkerPool pool(1, 8);
  Blocker blocker;
  ASSERT_TRUE(pool.Enqueue(blocker.Job()));
  blocker.started.WaitForNotification();
  absl::Mutex mu;
  std::vector<int> order;
  for (auto [tag, priority] : std::vector<std::pair<int, int>>{{1, 0}, {2, 5}, {3, 0}, {4, 5}, {5, -1}}) {
    QueuedJob job;
    job.priority = priority;
    job.run = [&, tag = tag] {
      absl::MutexLock lock(&mu);
      order.push_back(tag);
    };
    ASSERT_TRUE(pool.Enqueue(job));
  }
  blocker.release.Notify();
  ASSERT_TRUE(WaitFor([&] {
    absl::MutexLock lock(&mu);
    return order.size() == 5;
  }));
  EXPECT_EQ(order, (std::vector<int>{2, 4, 1, 3, 5}));
}

TEST(WorkerPool, AbandonedWaitersAreWithdrawnAndFreeTheirSlots) {
  WorkerPool pool(1, 2);
  Blocker blocker;
  ASSERT_TRUE(pool.Enqueue(blocker.Job()));
  blocker.started.WaitForNotification();
  std::atomic<bool> gone{false};
  std::atomic<int> withdrawn{0}, ran{0};
  QueuedJob job;
  job.run = [&] { ++ran; };
  job.abandoned = [&] { return gone.load(); };
  job.withdrawn = [&] { ++withdrawn; };
  ASSERT_TRUE(pool.Enqueue(job));
  ASSERT_TRUE(pool.Enqueue(job));
  ASSERT_FALSE(pool.Enqueue(job));
  gone = true;  // both clients went away
  EXPECT_TRUE(WaitFor([&] { return withdrawn.load() == 2; }));
  EXPECT_EQ(pool.queued(), 0);
  QueuedJob fresh;
  fresh.run = [&] { ++ran; };
  EXPECT_TRUE(pool.Enqueue(fresh)) << "withdrawn waiters freed their slots";
  blocker.release.Notify();
  EXPECT_TRUE(WaitFor([&] { return ran.load() == 1; }));
}

}  // namespace
}  // namespace squeezeserve::server
