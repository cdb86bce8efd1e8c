// The scheduler over the real (tiny) DART model: a request's image for a given seed is identical
// alone and under concurrent load, with requests joining mid-run at other steps and guidance.
#include <gtest/gtest.h>

#include "model/dart_engine.h"
#include "scheduler/scheduler.h"
#include "tests/testing/fake_engine.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::scheduler {
namespace {

using dartserve::testing::FakeClock;
using dartserve::testing::RecordingSink;

std::shared_ptr<RecordingSink> Submit(Scheduler& s, const std::string& id, uint64_t seed, int cls,
                                      float guidance) {
  auto sink = std::make_shared<RecordingSink>();
  auto r = std::make_unique<Request>();
  r->id = id;
  r->params = {.class_id = cls, .seed = seed, .guidance_scale = guidance};
  r->sink = sink;
  EXPECT_TRUE(s.Submit(r).ok());
  return sink;
}

TEST(RealModelSchedulerTest, ImageIsTheSameAloneAndUnderLoad) {
  model::DartEngine engine(dartserve::testing::MakeTinyModel());
  FakeClock clock;
  std::vector<uint8_t> alone;
  {
    Scheduler s({}, &engine, &clock);
    auto sink = Submit(s, "target", 77, 3, 2.0f);
    while (s.RunIteration()) {
    }
    ASSERT_TRUE(sink->result.ok()) << sink->result.status();
    alone = sink->result->image.data;
  }
  Scheduler s({.max_batch_requests = 5}, &engine, &clock);
  std::vector<std::shared_ptr<RecordingSink>> others;
  for (int i = 0; i < 3; ++i) others.push_back(Submit(s, "early" + std::to_string(i), i, i, 1.0f));
  s.RunIteration();
  s.RunIteration();
  auto target = Submit(s, "target", 77, 3, 2.0f);  // joins two steps behind the others
  for (int i = 0; i < 4; ++i)
    others.push_back(Submit(s, "late" + std::to_string(i), 10 + i, 9, 3.0f));
  while (s.RunIteration()) {
  }
  ASSERT_TRUE(target->result.ok()) << target->result.status();
  // Float results agree to ~1e-6 (sampler_test checks 1e-5); after 8-bit rounding a value sitting
  // on a rounding boundary may differ by one level, never more.
  const std::vector<uint8_t>& loaded = target->result->image.data;
  ASSERT_EQ(loaded.size(), alone.size());
  int max_diff = 0;
  for (size_t i = 0; i < alone.size(); ++i)
    max_diff = std::max(max_diff, std::abs(loaded[i] - alone[i]));
  EXPECT_LE(max_diff, 1);
  for (const auto& o : others) EXPECT_TRUE(o->result.ok());
}

}  // namespace
}  // namespace dartserve::scheduler
