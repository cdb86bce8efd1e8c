#include "model/sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/tiny_model.h"

namespace dartserve::model {
namespace {

using dartserve::testing::MakeTinyModel;
using ::testing::HasSubstr;

std::unique_ptr<GenerationState> MustStart(Sampler& sampler, const GenerateParams& p) {
  auto s = sampler.Start(p);
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// Runs one request alone and returns its x_0 estimate after every step.
std::vector<torch::Tensor> RunAlone(Sampler& sampler, const GenerateParams& p) {
  auto s = MustStart(sampler, p);
  std::vector<torch::Tensor> x0s;
  GenerationState* ptr = s.get();
  while (!s->finished()) {
    EXPECT_TRUE(sampler.Step({&ptr, 1}).ok());
    x0s.push_back(s->x0().clone());
  }
  return x0s;
}

TEST(SamplerTest, SameSeedSameImageDifferentSeedDifferentImage) {
  Sampler sampler(MakeTinyModel());
  auto a = sampler.Generate({.class_id = 1, .seed = 3});
  auto b = sampler.Generate({.class_id = 1, .seed = 3});
  auto c = sampler.Generate({.class_id = 1, .seed = 4});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_TRUE(torch::equal(*a, *b));
  EXPECT_GT(MaxDiff(*a, *c), 1e-3);
  EXPECT_EQ(a->sizes(), (std::vector<int64_t>{1, 8, 8}));
  EXPECT_LE(a->abs().max().item<float>(), 1.0f);
}

// Guided steps combine the two branches as x0_u + w (x0_c - x0_u), both evaluated on the shared
// (guided) trajectory. Checked against teacher-forced forwards of each branch.
TEST(SamplerTest, GuidanceCombinesBranchesOnSharedTrajectory) {
  Dart model = MakeTinyModel();
  Sampler sampler(model);
  const float w = 2.5f;
  auto s = MustStart(sampler, {.class_id = 6, .seed = 21, .guidance_scale = w});
  EXPECT_TRUE(s->guided());
  EXPECT_EQ(s->kv_bytes(), 2 * model->config().kv_bytes_per_row());
  std::vector<torch::Tensor> inputs, outputs;
  GenerationState* ptr = s.get();
  while (!s->finished()) {
    inputs.push_back(s->next_input().clone());
    ASSERT_TRUE(sampler.Step({&ptr, 1}).ok());
    outputs.push_back(s->x0().clone());
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor traj = torch::cat(inputs).unsqueeze(0);
  const torch::Tensor cond = model->forward(traj, torch::tensor({6}, torch::kLong))[0];
  const torch::Tensor uncond =
      model->forward(traj, torch::tensor({model->config().null_class()}, torch::kLong))[0];
  const torch::Tensor expected = uncond + w * (cond - uncond);
  const int64_t k = model->config().tokens_per_block();
  for (size_t b = 0; b < outputs.size(); ++b) {
    EXPECT_LE(MaxDiff(expected.narrow(0, b * k, k), outputs[b]), 1e-4) << "block " << b;
  }
}

// w = 1 is the conditional branch alone (no unconditional row, half the KV memory); w = 0 is the
// unconditional branch alone, i.e. exactly a null-class request with the same seed.
TEST(SamplerTest, GuidanceEndpoints) {
  Dart model = MakeTinyModel();
  Sampler sampler(model);
  auto one = MustStart(sampler, {.class_id = 4, .seed = 5, .guidance_scale = 1.0f});
  EXPECT_FALSE(one->guided());
  EXPECT_EQ(one->kv_bytes(), model->config().kv_bytes_per_row());

  const std::vector<torch::Tensor> w0 =
      RunAlone(sampler, {.class_id = 4, .seed = 5, .guidance_scale = 0.0f});
  const std::vector<torch::Tensor> null_class = RunAlone(sampler, {.seed = 5});
  const std::vector<torch::Tensor> w1 = RunAlone(sampler, {.class_id = 4, .seed = 5});
  for (size_t i = 0; i < w0.size(); ++i) EXPECT_LE(MaxDiff(w0[i], null_class[i]), 1e-5) << i;
  EXPECT_GT(MaxDiff(w0.back(), w1.back()), 1e-3);  // the condition matters
}

TEST(SamplerTest, PreviewsAreEachStepsEstimate) {
  Sampler sampler(MakeTinyModel());
  auto s = MustStart(sampler, {.class_id = 0, .seed = 1});
  EXPECT_FALSE(s->x0().defined());
  GenerationState* ptr = s.get();
  ASSERT_TRUE(sampler.Step({&ptr, 1}).ok());
  EXPECT_EQ(s->steps_done(), 1);
  const torch::Tensor preview = sampler.Image(*s);
  EXPECT_EQ(preview.sizes(), (std::vector<int64_t>{1, 8, 8}));
  while (!s->finished()) ASSERT_TRUE(sampler.Step({&ptr, 1}).ok());
  EXPECT_FALSE(s->next_input().defined());
  EXPECT_EQ(sampler.Step({&ptr, 1}).code(), absl::StatusCode::kFailedPrecondition);
}

// The properties every head (mean, flow) and variant (dart, dart_ar) must keep.
class SamplerVariantTest : public ::testing::TestWithParam<ModelConfig> {};

// A request's trajectory depends only on its own seed and parameters: the same as alone when it
// shares batches with other requests at other steps (for dart_ar: a request feeding its x_T block
// next to requests feeding single tokens), with other guidance and temperatures.
TEST_P(SamplerVariantTest, BatchInvariance) {
  Sampler sampler(MakeTinyModel(GetParam()));
  const GenerateParams target{
      .class_id = 2, .seed = 11, .guidance_scale = 2.0f, .temperature = 0.9f};
  const std::vector<torch::Tensor> alone = RunAlone(sampler, target);
  ASSERT_EQ(static_cast<int>(alone.size()), GetParam().generation_steps());

  auto early = MustStart(sampler, {.class_id = 5, .seed = 1});
  auto guided = MustStart(sampler, {.class_id = 7, .seed = 2, .guidance_scale = 4.0f});
  GenerationState* e = early.get();
  ASSERT_TRUE(sampler.Step({&e, 1}).ok());  // `early` is one step ahead
  auto mine = MustStart(sampler, target);
  auto uncond = MustStart(sampler, {.seed = 9, .temperature = 0.5f});
  std::unique_ptr<GenerationState> late;
  std::vector<torch::Tensor> batched;
  while (!mine->finished()) {
    std::vector<GenerationState*> batch;
    if (!guided->finished()) batch.push_back(guided.get());
    batch.push_back(mine.get());
    if (!early->finished()) batch.push_back(early.get());
    if (!uncond->finished()) batch.push_back(uncond.get());
    if (batched.size() == 2) late = MustStart(sampler, {.class_id = 1, .seed = 3});
    if (late && !late->finished()) batch.push_back(late.get());
    ASSERT_TRUE(sampler.Step(batch).ok());
    batched.push_back(mine->x0().clone());
  }
  ASSERT_EQ(batched.size(), alone.size());
  for (size_t i = 0; i < alone.size(); ++i) EXPECT_LE(MaxDiff(batched[i], alone[i]), 1e-5) << i;
}

// The recompute baseline (no KV cache) follows the same trajectory as the cached sampler and holds
// no KV memory beyond its condition.
TEST_P(SamplerVariantTest, RecomputeMatchesKvCache) {
  Dart model = MakeTinyModel(GetParam());
  Sampler cached(model);
  Sampler recompute(model, {.kv_cache = false});
  const GenerateParams p{.class_id = 8, .seed = 13, .guidance_scale = 3.0f};
  const std::vector<torch::Tensor> a = RunAlone(cached, p);
  const std::vector<torch::Tensor> b = RunAlone(recompute, p);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_LE(MaxDiff(a[i], b[i]), 1e-4) << i;
  EXPECT_EQ(MustStart(recompute, p)->kv_bytes(), 2 * GetParam().condition_bytes_per_row());
  EXPECT_EQ(MustStart(cached, p)->kv_bytes(), 2 * GetParam().kv_bytes_per_row());
}

INSTANTIATE_TEST_SUITE_P(HeadsAndVariants, SamplerVariantTest,
                         ::testing::Values(ModelConfig::Tiny(),
                                           dartserve::testing::TinyFlowConfig(),
                                           dartserve::testing::TinyArConfig(),
                                           dartserve::testing::TinyArConfig(OutputHead::kFlow)),
                         [](const auto& info) {
                           return std::string(info.param.flow() ? "Flow" : "Mean") +
                                  (info.param.autoregressive() ? "DartAr" : "Dart");
                         });

TEST(SamplerTest, InvalidParamsNameTheField) {
  Sampler sampler(MakeTinyModel());
  const auto error = [&](const GenerateParams& p) {
    auto s = sampler.Start(p);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.status().message());
  };
  EXPECT_THAT(error({.class_id = 10}), HasSubstr("class_id"));
  EXPECT_THAT(error({.class_id = -1}), HasSubstr("class_id"));
  EXPECT_THAT(error({.guidance_scale = -1}), HasSubstr("guidance_scale"));
  EXPECT_THAT(error({.guidance_scale = std::nanf("")}), HasSubstr("guidance_scale"));
  EXPECT_THAT(error({.temperature = -0.5f}), HasSubstr("temperature"));
  // The limits are the ones the model declares (and the server checks with the same function).
  const ParamLimits& limits = sampler.info().limits;
  EXPECT_TRUE(sampler.Start({.guidance_scale = limits.max_guidance}).ok());
  EXPECT_THAT(error({.guidance_scale = limits.max_guidance + 0.5f}), HasSubstr("guidance_scale"));
  EXPECT_TRUE(sampler.Start({.temperature = limits.max_temperature}).ok());
  EXPECT_THAT(error({.temperature = limits.max_temperature + 0.5f}), HasSubstr("temperature"));
  EXPECT_THAT(error({.temperature = 0.0f}), HasSubstr("temperature"));

  ModelConfig c = ModelConfig::Tiny();
  c.conditioning = Conditioning::kNone;
  Sampler uncond(MakeTinyModel(c));
  EXPECT_THAT(std::string(uncond.Start({.class_id = 1}).status().message()), HasSubstr("class_id"));
  EXPECT_TRUE(uncond.Start({.seed = 1}).ok());
}

}  // namespace
}  // namespace dartserve::model
