// DecodeStepTimer (engine/engine_log.h): the per-phase medians of a run of decode steps, the gap
// between consecutive steps, and when a line is logged.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/engine_log.h"

namespace squeezeserve {
namespace {

using Clock = DecodeStepTimer::Clock;
using std::chrono::microseconds;

// A step starting `gap_us` after `prev_end`, whose phases take the given microseconds.
DecodeStepTimer::Step MakeStep(Clock::time_point start, int prepare, int forward, int sample, int emit) {
  DecodeStepTimer::Step s;
  s.start = start;
  s.prepared = s.start + microseconds(prepare);
  s.forwarded = s.prepared + microseconds(forward);
  s.sampled = s.forwarded + microseconds(sample);
  s.emitted = s.sampled + microseconds(emit);
  return s;
}

struct Captured {
  std::vector<std::string> lines;
  DecodeStepTimer timer{[this](const std::string& l) { lines.push_back(l); }, [] { return int64_t{1000}; }};
};

TEST(DecodeStepTimer, LogsThePhaseMediansAndTheGapOfARun) {
  Captured c;
  Clock::time_point t = Clock::time_point{} + std::chrono::seconds(1);
  for (int i = 0; i < 9; ++i) {
    // Phases 50 / 9000 / 300 / 40 us; the 5th step's forward is slow (not the median); gaps 200 us.
    const DecodeStepTimer::Step s = MakeStep(t, 50, i == 4 ? 20000 : 9000, 300, 40);
    c.timer.Add(1, s);
    t = s.emitted + microseconds(200);
  }
  EXPECT_TRUE(c.lines.empty());  // a run is logged when it ends
  c.timer.Flush();
  ASSERT_EQ(c.lines.size(), 1u);
  EXPECT_EQ(c.lines[0],
            "decode step host times: batch 1, 9 steps: gap 0.200 ms, prepare 0.050 ms, forward 9.000 ms, "
            "sample 0.300 ms, emit 0.040 ms (medians), from 1000 to 1000 unix ms");
}

TEST(DecodeStepTimer, ANewBatchSizeEndsTheRunAndShortRunsAreNotLogged) {
  Captured c;
  Clock::time_point t = Clock::time_point{} + std::chrono::seconds(1);
  auto run = [&](int64_t batch, int steps) {
    for (int i = 0; i < steps; ++i) {
      const DecodeStepTimer::Step s = MakeStep(t, 10, 1000, 10, 10);
      c.timer.Add(batch, s);
      t = s.emitted + microseconds(100);
    }
  };
  run(8, 3);  // too short: dropped when batch 2 starts
  run(2, 8);
  run(8, 1);  // ends batch 2's run
  ASSERT_EQ(c.lines.size(), 1u);
  EXPECT_NE(c.lines[0].find("batch 2, 8 steps: gap 0.100 ms"), std::string::npos) << c.lines[0];
}

TEST(DecodeStepTimer, AStepSkippedBetweenTwoDecodeStepsIsNotAGap) {
  Captured c;
  Clock::time_point t = Clock::time_point{} + std::chrono::seconds(1);
  for (int i = 0; i < 8; ++i) {
    const DecodeStepTimer::Step s = MakeStep(t, 10, 1000, 10, 10);
    c.timer.Add(4, s);
    if (i % 2 == 0) c.timer.Skip();  // a prefill step ran between: its time is no gap
    t = s.emitted + (i % 2 == 0 ? microseconds(50000) : microseconds(300));
  }
  c.timer.Flush();
  ASSERT_EQ(c.lines.size(), 1u);
  // Gaps counted: only after the odd steps (300 us each); the first step has none.
  EXPECT_NE(c.lines[0].find("gap 0.300 ms"), std::string::npos) << c.lines[0];
}

}  // namespace
}  // namespace squeezeserve
