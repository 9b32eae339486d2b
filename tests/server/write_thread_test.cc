// The write thread: posted writes run off the posting thread, in the order posted, and the
// destructor runs what is still queued before it joins.
#include "server/write_thread.h"

#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace squeezeserve::server {
namespace {

TEST(WriteThread, RunsPostsInOrderOffThePostingThread) {
  absl::Mutex mu;
  std::vector<int> ran;
  std::vector<std::thread::id> on;
  absl::Notification done;
  {
    WriteThread writer;
    for (int i = 0; i < 100; ++i) {
      writer.Post([&, i] {
        absl::MutexLock lock(&mu);
        ran.push_back(i);
        on.push_back(std::this_thread::get_id());
        if (i == 99) done.Notify();
      });
    }
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  }
  ASSERT_EQ(ran.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(ran[i], i);
  for (const std::thread::id& id : on) EXPECT_NE(id, std::this_thread::get_id());
}

TEST(WriteThread, DestructorRunsWhatIsStillQueued) {
  absl::Notification release;
  int after_block = 0;
  {
    WriteThread writer;
    writer.Post([&] { release.WaitForNotification(); });  // holds the thread while more is posted
    for (int i = 0; i < 10; ++i) writer.Post([&] { ++after_block; });
    release.Notify();
  }  // joins only once all 11 ran
  EXPECT_EQ(after_block, 10);
}

}  // namespace
}  // namespace squeezeserve::server
