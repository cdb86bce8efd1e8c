// ComputeLane and OnLane: torch-free, so built into scheduler_test, which scripts/test.sh also runs
// under ThreadSanitizer.
#include "model/compute_lane.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "scheduler/scheduler.h"
#include "tests/testing/fake_engine.h"

namespace dartserve::model {
namespace {

TEST(ComputeLaneTest, RunsEveryCallOnItsOneThreadAndReturnsAfterIt) {
  ComputeLane lane;
  std::thread::id first, second;
  int value = 0;
  lane.Run([&] {
    first = std::this_thread::get_id();
    value = 1;
  });
  EXPECT_EQ(value, 1);  // Run returned only once fn had run
  lane.Run([&] { second = std::this_thread::get_id(); });
  EXPECT_NE(first, std::this_thread::get_id());
  EXPECT_EQ(first, second);
}

TEST(ComputeLaneTest, RethrowsOnTheCallerAndKeepsRunning) {
  ComputeLane lane;
  EXPECT_THROW(lane.Run([] { throw std::runtime_error("boom"); }), std::runtime_error);
  bool ran = false;
  lane.Run([&] { ran = true; });
  EXPECT_TRUE(ran);
}

// Works for `seconds` of steady time on the calling thread (work to measure, not a wait for
// another thread).
void Spin(double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
  }
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(ComputeLaneTest, BusySecondsCountTheCallsOnceAndNothingElse) {
  const auto start = std::chrono::steady_clock::now();
  ComputeLane lane;
  EXPECT_EQ(lane.busy_seconds(), 0);
  lane.Run([] { Spin(0.02); });
  EXPECT_GE(lane.busy_seconds(), 0.02);
  EXPECT_LE(lane.busy_seconds(), SecondsSince(start));
  // A nested call is part of its caller's time, not counted a second time.
  lane.Run([&] { lane.Run([] { Spin(0.02); }); });
  EXPECT_GE(lane.busy_seconds(), 0.04);
  EXPECT_LE(lane.busy_seconds(), SecondsSince(start));
}

TEST(ComputeLaneTest, NestedRunRunsInline) {
  ComputeLane lane;
  int depth = 0;
  lane.Run([&] { lane.Run([&] { depth = 2; }); });
  EXPECT_EQ(depth, 2);
}

TEST(ComputeLaneTest, CallsFromManyThreadsRunOneAtATime) {
  ComputeLane lane;
  std::atomic<int> inside{0}, most{0}, runs{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 8; ++t) {
    callers.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        lane.Run([&] {
          const int now = ++inside;
          most = std::max(most.load(), now);
          ++runs;
          --inside;
        });
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(runs.load(), 8 * 200);
  EXPECT_EQ(most.load(), 1);
}

// A FakeEngine that notes which thread made each torch call.
class ThreadNotingEngine : public testing::FakeEngine {
 public:
  absl::StatusOr<std::unique_ptr<EngineRequest>> Start(const GenerateParams& p) override {
    Note();
    return FakeEngine::Start(p);
  }
  absl::Status Step(std::span<EngineRequest* const> requests) override {
    Note();
    return FakeEngine::Step(requests);
  }
  absl::StatusOr<std::vector<Pixels>> Render(std::span<const RenderJob> jobs,
                                             RenderKind kind) override {
    Note();
    return FakeEngine::Render(jobs, kind);
  }
  std::vector<std::thread::id> threads;  // one per call; only the lane's thread writes

 private:
  void Note() { threads.push_back(std::this_thread::get_id()); }
};

// Two models' schedulers on one lane: every call of both engines runs on the lane's thread, and
// every request finishes with its result.
TEST(ComputeLaneTest, SchedulersOfTwoModelsShareTheLane) {
  auto lane = std::make_shared<ComputeLane>();
  std::thread::id lane_thread;
  lane->Run([&] { lane_thread = std::this_thread::get_id(); });
  auto a = std::make_unique<ThreadNotingEngine>();
  auto b = std::make_unique<ThreadNotingEngine>();
  ThreadNotingEngine* engines[] = {a.get(), b.get()};
  std::unique_ptr<Engine> on_lane[] = {OnLane(std::move(a), lane), OnLane(std::move(b), lane)};
  EXPECT_EQ(&on_lane[0]->info(), &engines[0]->info());  // queries go straight through
  std::vector<std::shared_ptr<testing::RecordingSink>> sinks;
  {
    std::vector<std::unique_ptr<scheduler::Scheduler>> schedulers;
    for (auto& engine : on_lane) {
      schedulers.push_back(std::make_unique<scheduler::Scheduler>(
          scheduler::SchedulerOptions{.max_batch_requests = 4}, engine.get()));
      schedulers.back()->Start();
    }
    for (int i = 0; i < 12; ++i) {
      auto request = std::make_unique<scheduler::Request>();
      request->id = absl::StrCat("r", i);
      request->params.seed = 3;  // three steps
      request->preview_every = 1;
      sinks.push_back(std::make_shared<testing::RecordingSink>());
      request->sink = sinks.back();
      ASSERT_TRUE(schedulers[i % 2]->Submit(request).ok());
    }
    for (auto& s : schedulers) s->WaitUntilIdle();
  }
  for (const auto& sink : sinks) {
    std::lock_guard<std::mutex> lock(sink->mu_);
    EXPECT_EQ(sink->finished, 1);
    EXPECT_TRUE(sink->result.ok()) << sink->result.status();
  }
  for (ThreadNotingEngine* engine : engines) {
    ASSERT_FALSE(engine->threads.empty());
    for (const std::thread::id& id : engine->threads) EXPECT_EQ(id, lane_thread);
  }
}

}  // namespace
}  // namespace dartserve::model
