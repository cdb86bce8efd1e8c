#include "scheduler/dispatcher.h"

#include <gtest/gtest.h>

#include "tests/testing/fake_engine.h"

namespace dartserve::scheduler {
namespace {

using dartserve::testing::FakeClock;
using dartserve::testing::FakeEngine;
using dartserve::testing::RecordingSink;

std::unique_ptr<Request> MakeRequest(const std::string& id) {
  auto r = std::make_unique<Request>();
  r->id = id;
  r->params.seed = 100;
  r->sink = std::make_shared<RecordingSink>();
  return r;
}

TEST(DispatcherTest, PicksTheLeastLoadedReplicaAndOverflows) {
  FakeEngine e1, e2;
  FakeClock clock;
  Scheduler s1({.max_queued = 2}, &e1, &clock), s2({.max_queued = 2}, &e2, &clock);
  Dispatcher d;
  d.AddReplica(&s1);
  d.AddReplica(&s2);
  for (int i = 0; i < 4; ++i) {
    auto r = MakeRequest("r" + std::to_string(i));
    ASSERT_TRUE(d.Submit(r).ok());
    EXPECT_EQ(r, nullptr);
    // Alternates: each submit goes to the replica with less load.
    EXPECT_EQ(s1.load(), (i + 2) / 2);
    EXPECT_EQ(s2.load(), (i + 1) / 2);
  }
  EXPECT_EQ(d.stats().queued, 4);
  auto full = MakeRequest("r4");
  EXPECT_EQ(d.Submit(full).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full, nullptr);  // not taken
  EXPECT_TRUE(d.Cancel("r3"));
  EXPECT_FALSE(d.Cancel("r9"));
}

TEST(DispatcherTest, OverflowsToAnotherReplicaWhenTheLeastLoadedIsFull) {
  FakeEngine e1, e2;
  FakeClock clock;
  // s1 takes nothing queued, so every request lands on s2 even though s1 has less load.
  Scheduler s1({.max_queued = 0}, &e1, &clock), s2({.max_queued = 4}, &e2, &clock);
  Dispatcher d;
  d.AddReplica(&s1);
  d.AddReplica(&s2);
  auto r = MakeRequest("a");
  ASSERT_TRUE(d.Submit(r).ok());
  EXPECT_EQ(s1.load(), 0);
  EXPECT_EQ(s2.load(), 1);
}

TEST(DispatcherTest, RunsEveryRequestOnSomeReplicaAndSumsStats) {
  FakeEngine e1, e2;
  FakeClock clock;
  Scheduler s1({}, &e1, &clock), s2({}, &e2, &clock);
  Dispatcher d;
  d.AddReplica(&s1);
  d.AddReplica(&s2);
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 6; ++i) {
    auto r = MakeRequest("r" + std::to_string(i));
    sinks.push_back(std::static_pointer_cast<RecordingSink>(r->sink));
    ASSERT_TRUE(d.Submit(r).ok());
  }
  while (s1.RunIteration() || s2.RunIteration()) {
  }
  for (const auto& sink : sinks) {
    EXPECT_EQ(sink->finished, 1);
    EXPECT_TRUE(sink->result.ok()) << sink->result.status();
  }
  const SchedulerStats stats = d.stats();
  EXPECT_EQ(stats.queued + stats.active, 0);
  EXPECT_EQ(stats.iterations, s1.stats().iterations + s2.stats().iterations);
  EXPECT_GT(s1.stats().iterations, 0);
  EXPECT_GT(s2.stats().iterations, 0);
}

TEST(DispatcherTest, NoReplicasIsAnError) {
  Dispatcher d;
  auto r = MakeRequest("a");
  EXPECT_EQ(d.Submit(r).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace dartserve::scheduler
