#include "scheduler/scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/testing/fake_engine.h"

namespace dartserve::scheduler {
namespace {

using dartserve::testing::FakeClock;
using dartserve::testing::FakeEngine;
using dartserve::testing::RecordingSink;
using ::testing::ElementsAre;

class SchedulerTest : public ::testing::Test {
 protected:
  std::unique_ptr<Scheduler> Make(SchedulerOptions options = {}) {
    return std::make_unique<Scheduler>(options, &engine_, &clock_);
  }

  // Submits a request; returns its sink (null when Submit failed, with the status in *status).
  std::shared_ptr<RecordingSink> Submit(Scheduler& s, const std::string& id, uint64_t seed,
                                        int priority = 1, absl::Status* status = nullptr,
                                        absl::Time deadline = absl::InfiniteFuture(),
                                        float guidance = 1.0f) {
    auto sink = std::make_shared<RecordingSink>();
    auto req = std::make_unique<Request>();
    req->id = id;
    req->params.seed = seed;
    req->params.guidance_scale = guidance;
    req->priority = priority;
    req->deadline = deadline;
    req->sink = sink;
    absl::Status st = s.Submit(req);
    if (status != nullptr) *status = st;
    EXPECT_EQ(st.ok(), req == nullptr) << "Submit takes ownership iff OK";
    return st.ok() ? sink : nullptr;
  }

  void RunToIdle(Scheduler& s, int max_iterations = 1000) {
    for (int i = 0; i < max_iterations && s.RunIteration(); ++i) {
    }
  }

  FakeEngine engine_;
  FakeClock clock_;
};

TEST_F(SchedulerTest, CompletesWithImageSeedAndTimings) {
  auto s = Make();
  auto sink = Submit(*s, "a", 3);
  clock_.Advance(absl::Seconds(2));
  RunToIdle(*s);
  ASSERT_EQ(sink->finished, 1);
  ASSERT_TRUE(sink->result.ok()) << sink->result.status();
  EXPECT_EQ(sink->result->seed, 3u);
  EXPECT_EQ(sink->result->steps, 3);
  EXPECT_EQ(sink->result->queue_time, absl::Seconds(2));
  EXPECT_EQ(sink->result->image.width, 8);
  EXPECT_THAT(sink->steps, ElementsAre(1, 2, 3));
  EXPECT_EQ(engine_.live_requests, 0);
}

TEST_F(SchedulerTest, QueueFullIsRejectedWithoutTakingOwnership) {
  auto s = Make({.max_queued = 2});
  absl::Status st;
  EXPECT_NE(Submit(*s, "a", 100, 1, &st), nullptr);
  EXPECT_NE(Submit(*s, "b", 100, 1, &st), nullptr);
  EXPECT_EQ(Submit(*s, "c", 100, 1, &st), nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(SchedulerTest, InvalidRequestsAreRejected) {
  auto s = Make();
  absl::Status st;
  Submit(*s, "a", 100, /*priority=*/7, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  Submit(*s, "", 100, 1, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  Submit(*s, "x", 100, 1, &st);
  Submit(*s, "x", 100, 1, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(st.message(), "request_id: 'x' is in flight");
  // A client's id is echoed quoted and cut, however long.
  const std::string long_id(5000, 'y');
  Submit(*s, long_id, 100, 1, &st);
  Submit(*s, long_id, 100, 1, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("...' (5000 bytes) is in flight"));
  EXPECT_LT(st.message().size(), 200u);
  engine_.kv_per_row = 1 << 20;
  auto big = Make({.kv_budget_bytes = 1000});
  Submit(*big, "huge", 100, 1, &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(SchedulerTest, PriorityOrderFifoWithinClass) {
  auto s = Make({.max_batch_requests = 1});
  auto low = Submit(*s, "low", 1, 2);
  auto mid1 = Submit(*s, "mid1", 1, 1);
  auto high = Submit(*s, "high", 1, 0);
  auto mid2 = Submit(*s, "mid2", 1, 1);
  std::vector<std::string> order;
  const std::vector<std::pair<std::string, RecordingSink*>> all = {
      {"low", low.get()}, {"mid1", mid1.get()}, {"high", high.get()}, {"mid2", mid2.get()}};
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(s->RunIteration());
    for (const auto& [name, sink] : all) {
      if (sink->finished == 1 && std::find(order.begin(), order.end(), name) == order.end()) {
        order.push_back(name);
      }
    }
  }
  EXPECT_THAT(order, ElementsAre("high", "mid1", "mid2", "low"));
}

TEST_F(SchedulerTest, AgingPreventsStarvation) {
  auto s = Make({.aging = absl::Seconds(10), .max_batch_requests = 1});
  auto low = Submit(*s, "low", 1, 2);
  // A steady stream of urgent one-step requests, one per second.
  int started_before_low = 0;
  for (int i = 0; i < 40 && !low->started; ++i) {
    Submit(*s, absl::StrCat("hi", i), 1, 0);
    s->RunIteration();
    if (!low->started) ++started_before_low;
    clock_.Advance(absl::Seconds(1));
  }
  EXPECT_TRUE(low->started);
  EXPECT_LE(started_before_low, 21);  // two promotions of 10 s each
}

TEST_F(SchedulerTest, DeadlineExpiresInQueue) {
  auto s = Make({.max_batch_requests = 1});
  auto running = Submit(*s, "run", 10);
  auto waiting = Submit(*s, "wait", 3, 1, nullptr, clock_.Now() + absl::Seconds(5));
  s->RunIteration();
  clock_.Advance(absl::Seconds(6));
  s->RunIteration();
  EXPECT_EQ(waiting->finished, 1);
  EXPECT_FALSE(waiting->started);
  EXPECT_EQ(waiting->result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(running->finished, 0);
}

TEST_F(SchedulerTest, DeadlineExpiresMidRunAndFreesMemory) {
  auto s = Make();
  auto sink = Submit(*s, "a", 10, 1, nullptr, clock_.Now() + absl::Seconds(5));
  s->RunIteration();
  s->RunIteration();
  EXPECT_EQ(engine_.live_requests, 1);
  EXPECT_EQ(s->stats().kv_bytes_used, 100);
  clock_.Advance(absl::Seconds(5));
  s->RunIteration();
  EXPECT_EQ(sink->finished, 1);
  EXPECT_EQ(sink->result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(engine_.live_requests, 0);
  EXPECT_EQ(s->stats().kv_bytes_used, 0);
  EXPECT_THAT(sink->steps, ElementsAre(1, 2));
}

TEST_F(SchedulerTest, CancellationMidRunFreesMemoryAtTheNextBoundary) {
  auto s = Make();
  auto a = Submit(*s, "a", 10);
  auto b = Submit(*s, "b", 10);
  s->RunIteration();
  EXPECT_TRUE(s->Cancel("a"));
  EXPECT_FALSE(s->Cancel("nope"));
  EXPECT_EQ(engine_.live_requests, 2);  // takes effect at the boundary, not inside a step
  s->RunIteration();
  EXPECT_EQ(a->result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(engine_.live_requests, 1);
  EXPECT_EQ(s->stats().kv_bytes_used, 100);
  EXPECT_EQ(engine_.batches.back(), std::vector<uint64_t>{10});  // only b stepped
  RunToIdle(*s);
  EXPECT_TRUE(b->result.ok());
  EXPECT_EQ(a->finished, 1);
  EXPECT_FALSE(s->Cancel("a"));  // no longer live
}

// Cancel frees the id at once (a client that saw its call end may retry with it), while the
// cancelled request itself leaves at the next boundary; the new request with the same id is not
// cancelled with it.
TEST_F(SchedulerTest, CancelFreesTheIdAtOnce) {
  auto s = Make();
  auto old = Submit(*s, "a", 10);
  s->RunIteration();
  EXPECT_TRUE(s->Cancel("a"));
  absl::Status st;
  auto retry = Submit(*s, "a", 3, 1, &st);
  ASSERT_NE(retry, nullptr) << st;
  EXPECT_EQ(old->finished, 0);  // still active until the boundary
  RunToIdle(*s);
  EXPECT_EQ(old->result.status().code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE(retry->result.ok()) << retry->result.status();
  EXPECT_THAT(retry->steps, ElementsAre(1, 2, 3));
  EXPECT_EQ(s->stats().kv_bytes_used, 0);
  // A queued request too; and a cancel names the live request, not the released one.
  auto queued = Submit(*s, "q", 3);
  EXPECT_TRUE(s->Cancel("q"));
  EXPECT_FALSE(s->Cancel("q"));
  auto again = Submit(*s, "q", 3);
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(s->Cancel("q"));
  RunToIdle(*s);
  EXPECT_EQ(queued->result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(again->result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(engine_.live_requests, 0);
}

TEST_F(SchedulerTest, FailedStepFailsItsBatchOnceAndServingContinues) {
  engine_.fail_on_call = 1;
  auto s = Make();
  auto a = Submit(*s, "a", 5);
  auto b = Submit(*s, "b", 5, 1, nullptr, absl::InfiniteFuture(), /*guidance=*/2.0f);
  s->RunIteration();
  s->RunIteration();  // the failing call
  for (auto* sink : {a.get(), b.get()}) {
    EXPECT_EQ(sink->finished, 1);
    EXPECT_EQ(sink->result.status().code(), absl::StatusCode::kInternal);
  }
  EXPECT_EQ(engine_.live_requests, 0);
  EXPECT_EQ(s->stats().kv_bytes_used, 0);
  auto c = Submit(*s, "c", 2);
  RunToIdle(*s);
  EXPECT_TRUE(c->result.ok());
  EXPECT_EQ(a->finished, 1);
  EXPECT_EQ(b->finished, 1);
}

TEST_F(SchedulerTest, AdmissionNeverExceedsTheKvBudget) {
  auto s = Make({.kv_budget_bytes = 450});
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 30; ++i) {
    // Mix of one-row (100 B) and guided two-row (200 B) requests with 1..7 steps.
    sinks.push_back(Submit(*s, absl::StrCat("r", i), 1 + i % 7, 1, nullptr, absl::InfiniteFuture(),
                           i % 3 == 0 ? 3.0f : 1.0f));
  }
  RunToIdle(*s);
  EXPECT_LE(engine_.max_live_kv, 450);
  EXPECT_GE(engine_.max_live_kv, 300);  // and the budget is actually used
  for (const auto& sink : sinks) {
    EXPECT_EQ(sink->finished, 1);
    EXPECT_TRUE(sink->result.ok());
  }
}

TEST_F(SchedulerTest, RequestsJoinAndLeaveAtEveryIteration) {
  auto s = Make();
  Submit(*s, "a", 3);
  s->RunIteration();
  Submit(*s, "b", 2);  // joins while a is at step 1
  s->RunIteration();
  s->RunIteration();
  s->RunIteration();
  EXPECT_THAT(engine_.batches, ElementsAre(std::vector<uint64_t>{3}, std::vector<uint64_t>{3, 2},
                                           std::vector<uint64_t>{3, 2}));
  EXPECT_FALSE(s->RunIteration());
}

TEST_F(SchedulerTest, BatchCapsLimitRequestsAndTokens) {
  auto s = Make({.max_batch_requests = 3, .max_batch_tokens = 40});
  for (int i = 0; i < 5; ++i) Submit(*s, absl::StrCat("r", i), 100 + i);
  s->RunIteration();
  EXPECT_EQ(engine_.batches.back().size(), 2u);  // 16 tokens each: the third would make 48 > 40
}

// More admissible requests than max_batch_requests, with KV and tokens to spare: the request cap
// alone limits each batch, and the requests over it wait in the queue and step in later batches.
TEST_F(SchedulerTest, RequestCapIsReachedAndTheRestStepLater) {
  engine_.default_steps = 2;  // seeds >= 100 take two steps each
  std::vector<IterationInfo> iterations;
  auto s = Make({.max_batch_requests = 3,
                 .max_batch_tokens = 1 << 16,
                 .kv_budget_bytes = int64_t{1} << 30,
                 .on_iteration = [&](const IterationInfo& it) { iterations.push_back(it); }});
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 7; ++i) sinks.push_back(Submit(*s, absl::StrCat("r", i), 100 + i));

  ASSERT_TRUE(s->RunIteration());
  EXPECT_EQ(s->stats().active, 3);
  EXPECT_EQ(s->stats().queued, 4);
  EXPECT_EQ(s->stats().kv_bytes_used, 300);  // the budget would take all seven
  for (int i = 0; i < 7; ++i) EXPECT_EQ(sinks[i]->started, i < 3) << "r" << i;
  RunToIdle(*s);

  // FIFO within the class; each request steps twice, in consecutive batches, then leaves.
  using Batch = std::vector<uint64_t>;
  EXPECT_THAT(engine_.batches,
              ElementsAre(Batch{100, 101, 102}, Batch{100, 101, 102}, Batch{103, 104, 105},
                          Batch{103, 104, 105}, Batch{106}, Batch{106}));
  ASSERT_EQ(iterations.size(), 6u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(iterations[i].batch_requests, 3) << "iteration " << i;
  EXPECT_EQ(s->stats().total_batch_requests, 3 + 3 + 3 + 3 + 1 + 1);
  for (const auto& sink : sinks) {
    EXPECT_EQ(sink->finished, 1);
    EXPECT_TRUE(sink->result.ok()) << sink->result.status();
    EXPECT_THAT(sink->steps, ElementsAre(1, 2));
  }
}

TEST_F(SchedulerTest, PreviewCadenceAndSize) {
  auto s = Make();
  auto sink = std::make_shared<RecordingSink>();
  auto req = std::make_unique<Request>();
  req->id = "p";
  req->params.seed = 5;
  req->preview_every = 2;
  req->preview_max_side = 4;
  req->sink = sink;
  ASSERT_TRUE(s->Submit(req).ok());
  RunToIdle(*s);
  EXPECT_THAT(sink->steps, ElementsAre(1, 2, 3, 4, 5));
  EXPECT_THAT(sink->preview_steps, ElementsAre(2, 4));
  EXPECT_EQ(sink->preview_side, 4);
  EXPECT_EQ(sink->result->image.width, 8);  // the final image is full size
}

// Previews due at one step are rendered in one Render call per kind, and the images that finish
// at one step in one kDecoded call (a latent engine decodes each group with one decoder call).
TEST_F(SchedulerTest, RendersPreviewsAndFinalImagesInBatches) {
  auto s = Make();
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 4; ++i) {
    auto sink = std::make_shared<RecordingSink>();
    auto req = std::make_unique<Request>();
    req->id = absl::StrCat("r", i);
    req->params.seed = 3;  // three steps each
    req->preview_every = 1;
    req->preview_kind = i % 2 == 0 ? model::RenderKind::kLinear : model::RenderKind::kDecoded;
    req->sink = sink;
    ASSERT_TRUE(s->Submit(req).ok());
    sinks.push_back(sink);
  }
  RunToIdle(*s);
  using Call = std::pair<model::RenderKind, int>;
  std::vector<Call> calls;
  for (const FakeEngine::RenderCall& c : engine_.render_calls) calls.emplace_back(c.kind, c.jobs);
  const Call linear2{model::RenderKind::kLinear, 2}, decoded2{model::RenderKind::kDecoded, 2};
  const Call final4{model::RenderKind::kDecoded, 4};
  // Steps 1 and 2: one call per kind; step 3: all four finish, one call for their images.
  EXPECT_THAT(calls, ElementsAre(linear2, decoded2, linear2, decoded2, final4));
  for (const auto& sink : sinks) {
    ASSERT_EQ(sink->finished, 1);
    ASSERT_TRUE(sink->result.ok()) << sink->result.status();
    EXPECT_THAT(sink->steps, ElementsAre(1, 2, 3));
    EXPECT_THAT(sink->preview_steps, ElementsAre(1, 2));
    EXPECT_EQ(sink->result->image.data[0], 3);  // the fake's pixels are the steps done
  }
}

TEST_F(SchedulerTest, DrainFinishesWithinGraceThenFailsTheRest) {
  auto s = Make({.max_batch_requests = 1});
  auto fast = Submit(*s, "fast", 2);
  auto slow = Submit(*s, "slow", 50);
  s->BeginDrain(absl::Seconds(10));
  absl::Status st;
  EXPECT_EQ(Submit(*s, "late", 1, 1, &st), nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  s->RunIteration();
  s->RunIteration();
  EXPECT_TRUE(fast->result.ok());
  s->RunIteration();
  EXPECT_TRUE(slow->started);
  clock_.Advance(absl::Seconds(11));
  s->RunIteration();
  EXPECT_EQ(slow->result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine_.live_requests, 0);
}

TEST_F(SchedulerTest, DestructorFailsOutstandingRequests) {
  std::shared_ptr<RecordingSink> queued, active;
  {
    auto s = Make({.max_batch_requests = 1});
    active = Submit(*s, "a", 10);
    queued = Submit(*s, "q", 10);
    s->RunIteration();
  }
  EXPECT_EQ(active->result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(queued->result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine_.live_requests, 0);
}

// The worker thread: concurrent submitters, every request finishes exactly once (run under TSan).
TEST_F(SchedulerTest, WorkerThreadServesConcurrentSubmitters) {
  auto s = Make({.max_batch_requests = 4, .kv_budget_bytes = 350});
  s->Start();
  std::vector<std::shared_ptr<RecordingSink>> sinks(40);
  auto submit_range = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      auto sink = std::make_shared<RecordingSink>();
      auto req = std::make_unique<Request>();
      req->id = absl::StrCat("r", i);
      req->params.seed = 1 + i % 5;
      req->sink = sink;
      ASSERT_TRUE(s->Submit(req).ok());
      sinks[i] = sink;
      if (i % 7 == 0) s->Cancel(absl::StrCat("r", i));  // some finish CANCELLED
    }
  };
  std::thread t1(submit_range, 0, 20), t2(submit_range, 20, 40);
  t1.join();
  t2.join();
  s->WaitUntilIdle();
  for (auto& sink : sinks) {
    std::lock_guard<std::mutex> lock(sink->mu_);
    EXPECT_EQ(sink->finished, 1);
  }
  EXPECT_EQ(s->stats().kv_bytes_used, 0);
}

}  // namespace
}  // namespace dartserve::scheduler
