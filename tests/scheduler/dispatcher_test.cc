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
  FakeEngine e1, e2, other;
  FakeClock clock;
  Scheduler s1({.max_queued = 2}, &e1, &clock), s2({.max_queued = 2}, &e2, &clock);
  Scheduler s3({}, &other, &clock);
  Dispatcher d;
  d.AddReplica("fmnist", &s1);
  d.AddReplica("fmnist", &s2);
  d.AddReplica("shapes", &s3);
  for (int i = 0; i < 4; ++i) {
    auto r = MakeRequest("r" + std::to_string(i));
    ASSERT_TRUE(d.Submit("fmnist", r).ok());
  }
  EXPECT_EQ(s1.load(), 2);  // alternated by load
  EXPECT_EQ(s2.load(), 2);
  auto full = MakeRequest("r4");
  EXPECT_EQ(d.Submit("fmnist", full).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full, nullptr);
  auto unknown = MakeRequest("x");
  EXPECT_EQ(d.Submit("nope", unknown).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(d.Cancel("r3"));
  EXPECT_FALSE(d.Cancel("r9"));
  EXPECT_EQ(s3.load(), 0);
  EXPECT_EQ(d.models(), (std::vector<std::string>{"fmnist", "shapes"}));
}

}  // namespace
}  // namespace dartserve::scheduler
