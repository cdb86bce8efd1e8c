// DART-FM: the flow head on its own (it must represent multi-modal conditionals, which a mean head
// cannot), the guided flow sampler against a hand-written integration, training, checkpoints.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "model/checkpoint.h"
#include "model/flow_head.h"
#include "model/loss.h"
#include "model/sampler.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::model {
namespace {

using dartserve::testing::MakeTinyModel;

using dartserve::testing::TinyFlowConfig;

// Two classes, each an equal mixture of two 2-D Gaussians (sigma 0.25): class 0 has modes at
// (+-1.5, 0), class 1 at (0, +-1.5). The conditional mean of either class is (0, 0), far from every
// mode, so an MSE head's prediction lies where there is no data; the flow head must sample the
// modes with the right spread and weights.
TEST(FlowHeadTest, LearnsAConditionalMixtureOfGaussians) {
  torch::manual_seed(0);
  FlowHead head(/*cond_dim=*/2, /*token_dim=*/2, /*width=*/64, /*depth=*/3);
  torch::optim::Adam opt(head->parameters(), torch::optim::AdamOptions(3e-3));
  const torch::Tensor modes = torch::tensor({1.5f, 0.f, -1.5f, 0.f, 0.f, 1.5f, 0.f, -1.5f})
                                  .view({2, 2, 2});  // [class, mode, xy]
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto draw = [&](int64_t n) {
    const torch::Tensor cls = torch::randint(0, 2, {n}, gen, torch::kLong);
    const torch::Tensor mode = torch::randint(0, 2, {n}, gen, torch::kLong);
    const torch::Tensor x = modes.index({cls, mode}) + 0.25 * torch::randn({n, 2}, gen);
    return std::pair{torch::one_hot(cls, 2).to(torch::kFloat), x};
  };
  for (int step = 0; step < 1500; ++step) {
    auto [h, x0] = draw(256);
    const torch::Tensor s = torch::rand({256}, gen);
    const torch::Tensor eps = torch::randn({256, 2}, gen);
    const torch::Tensor y = s.unsqueeze(1) * x0 + (1 - s).unsqueeze(1) * eps;
    const torch::Tensor loss =
        (head->Velocity(y, s, head->Modulation(h)) - (x0 - eps)).pow(2).mean();
    opt.zero_grad();
    loss.backward();
    opt.step();
  }

  torch::NoGradGuard no_grad;
  const int64_t n = 2000;
  for (int64_t c = 0; c < 2; ++c) {
    const torch::Tensor h = torch::one_hot(torch::full({n}, c, torch::kLong), 2).to(torch::kFloat);
    const torch::Tensor modulation = head->Modulation(h);
    const torch::Tensor samples = IntegrateFlow(
        torch::randn({n, 2}, gen), 16, FlowSolver::kHeun, [&](const torch::Tensor& y, double s) {
          return head->Velocity(y, torch::full({1}, s), modulation);
        });
    for (int64_t m = 0; m < 2; ++m) {
      const torch::Tensor mode = modes[c][m];
      const torch::Tensor near = (samples - mode).norm(2, 1) < 0.75;  // within 3 sigma
      const torch::Tensor mine = samples.index({near});
      const double fraction = static_cast<double>(mine.size(0)) / n;
      EXPECT_NEAR(fraction, 0.5, 0.1) << "class " << c << " mode " << m;
      ASSERT_GT(mine.size(0), 10);
      EXPECT_LT((mine.mean(0) - mode).abs().max().item<double>(), 0.12) << c << "/" << m;
      const torch::Tensor stddev = mine.std(0);
      EXPECT_GT(stddev.min().item<double>(), 0.15) << c << "/" << m;
      EXPECT_LT(stddev.max().item<double>(), 0.35) << c << "/" << m;
    }
    // Almost nothing lands near the conditional mean, where a mean head would put every sample.
    EXPECT_LT((samples.norm(2, 1) < 0.5).sum().item<int64_t>(), n / 20);
  }
}

TEST(FlowHeadTest, EulerAndHeunIntegrateAConstantAndALinearField) {
  const torch::Tensor start = torch::tensor({1.0f, -2.0f});
  // dy/ds = 3: y(1) = y(0) + 3 for every solver and step count.
  for (FlowSolver solver : {FlowSolver::kEuler, FlowSolver::kHeun}) {
    const torch::Tensor y = IntegrateFlow(
        start, 4, solver, [](const torch::Tensor& y, double) { return torch::full_like(y, 3.0); });
    EXPECT_TRUE(torch::allclose(y, start + 3));
  }
  // dy/ds = s: y(1) = y(0) + 1/2. Heun is exact on its averaged steps, Euler lags by ds/2.
  const auto field = [](const torch::Tensor& y, double s) { return torch::full_like(y, s); };
  const torch::Tensor euler = IntegrateFlow(start, 4, FlowSolver::kEuler, field);
  EXPECT_TRUE(torch::allclose(euler, start + 0.375));
  const torch::Tensor heun = IntegrateFlow(start, 4, FlowSolver::kHeun, field);
  // Three Heun steps (exact) and a final Euler step from s = 0.75: 0.375 + 0.1875 = 0.46875 + ...
  EXPECT_TRUE(torch::allclose(heun, start + (0.5 - 0.25 * 0.25 / 2)));
}

// With guidance w the sampler integrates v = v_u + w (v_c - v_u) from the request's own noise;
// checked against features of the teacher-forced forward and a hand-written loop.
TEST(FlowSamplerTest, GuidedSampleMatchesAHandWrittenIntegration) {
  const ModelConfig config = TinyFlowConfig();
  Dart model = MakeTinyModel(config);
  Sampler sampler(model);
  const float w = 2.0f;
  const GenerateParams params{.class_id = 3, .seed = 17, .guidance_scale = w, .temperature = 0.8f};
  auto state = sampler.Start(params);
  ASSERT_TRUE(state.ok());
  GenerationState* ptr = state->get();
  const torch::Tensor x_t = ptr->next_input().clone();
  ASSERT_TRUE(sampler.Step({&ptr, 1}).ok());

  // Replay: the state's generator drew x_T first and then the head's noise.
  torch::NoGradGuard no_grad;
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(params.seed);
  const int64_t k = config.tokens_per_block(), d = config.token_dim();
  const torch::Tensor x_T = torch::randn({k, d}, gen, torch::kFloat);
  ASSERT_TRUE(torch::equal(x_T, x_t));
  const torch::Tensor noise = torch::randn({k, d}, gen, torch::kFloat) * params.temperature;
  const torch::Tensor ids = torch::tensor({int64_t{3}, int64_t{config.null_class()}});
  const torch::Tensor features = model->ForwardFeatures(x_t.unsqueeze(0).expand({2, k, d}), ids);
  const torch::Tensor mod_c = model->flow_head()->Modulation(features[0]);
  const torch::Tensor mod_u = model->flow_head()->Modulation(features[1]);
  const torch::Tensor expected = IntegrateFlow(
      noise, config.flow_steps, config.flow_solver, [&](const torch::Tensor& y, double s) {
        const torch::Tensor t = torch::full({1}, s);
        const torch::Tensor v_c = model->flow_head()->Velocity(y, t, mod_c);
        const torch::Tensor v_u = model->flow_head()->Velocity(y, t, mod_u);
        return v_u + w * (v_c - v_u);
      });
  EXPECT_LE((expected - ptr->x0()).abs().max().item<double>(), 1e-5);
}

// w = 0 is the null-class request with the same seed (batch invariance and recompute = KV cache
// are checked for every head and variant in sampler_test).
TEST(FlowSamplerTest, GuidanceZeroIsTheNullClass) {
  Sampler plain(MakeTinyModel(TinyFlowConfig()));
  auto w0 = plain.Generate({.class_id = 4, .seed = 5, .guidance_scale = 0.0f});
  auto null_class = plain.Generate({.seed = 5});
  ASSERT_TRUE(w0.ok() && null_class.ok());
  EXPECT_LE((*w0 - *null_class).abs().max().item<double>(), 1e-5);
}

// Temperature scales every noise the sampler draws: the re-noising between DART steps and, with
// a flow head, the head's starting noise (as MAR's temperature scales its per-token sampler's
// noise). With T = 1 there is no re-noising, so only the flow head's noise can make it matter.
TEST(FlowSamplerTest, TemperatureScalesTheFlowHeadsStartingNoise) {
  for (const bool flow : {true, false}) {
    ModelConfig c = flow ? TinyFlowConfig() : ModelConfig::Tiny();
    c.num_steps = 1;
    Sampler sampler(MakeTinyModel(c));
    auto warm = sampler.Generate({.class_id = 2, .seed = 7, .temperature = 1.0f});
    auto cool = sampler.Generate({.class_id = 2, .seed = 7, .temperature = 0.5f});
    ASSERT_TRUE(warm.ok() && cool.ok());
    const double diff = (*warm - *cool).abs().max().item<double>();
    if (flow) {
      EXPECT_GT(diff, 1e-3) << "the flow head's noise is scaled by the temperature";
    } else {
      EXPECT_EQ(diff, 0) << "a one-step mean-head model draws no noise";
    }
  }
}

// A request's flow_steps picks its own ODE step count; requests asking for different counts (and
// for the default) share one batch and each still gets exactly its image alone.
TEST(FlowSamplerTest, RequestsWithDifferentFlowStepsShareABatch) {
  Sampler sampler(MakeTinyModel(TinyFlowConfig()));
  const std::vector<GenerateParams> params = {
      {.class_id = 1, .seed = 3, .flow_steps = 1},
      {.class_id = 2, .seed = 4, .guidance_scale = 2.0f, .flow_steps = 8},
      {.class_id = 3, .seed = 5},  // the model's default
      {.class_id = 1, .seed = 3, .flow_steps = 8},
  };
  std::vector<std::unique_ptr<GenerationState>> states;
  std::vector<GenerationState*> batch;
  for (const GenerateParams& p : params) {
    auto state = sampler.Start(p);
    ASSERT_TRUE(state.ok());
    batch.push_back(state->get());
    states.push_back(*std::move(state));
  }
  while (!batch.front()->finished()) ASSERT_TRUE(sampler.Step(batch).ok());
  for (size_t i = 0; i < params.size(); ++i) {
    auto alone = sampler.Generate(params[i]);
    ASSERT_TRUE(alone.ok());
    EXPECT_LE((sampler.Image(*states[i]) - *alone).abs().max().item<double>(), 1e-5) << i;
  }
  // The step count matters: the same request with 1 and with 8 ODE steps.
  EXPECT_GT((sampler.Image(*states[0]) - sampler.Image(*states[3])).abs().max().item<double>(),
            1e-3);
}

TEST(FlowSamplerTest, FlowStepsAreCheckedAgainstTheModel) {
  const ModelConfig config = TinyFlowConfig();
  const ModelInfo flow = DescribeModel(MakeTinyModel(config));
  EXPECT_EQ(flow.default_flow_steps, config.flow_steps);
  for (const int ok : {0, 1, flow.limits.max_flow_steps}) {
    EXPECT_TRUE(CheckParams({.class_id = 1, .flow_steps = ok}, flow).ok()) << ok;
  }
  for (const int bad : {-1, flow.limits.max_flow_steps + 1}) {
    const absl::Status s = CheckParams({.class_id = 1, .flow_steps = bad}, flow);
    EXPECT_TRUE(absl::StartsWith(s.message(), "flow_steps: must be in [0, ")) << s;
  }
  const ModelInfo mean = DescribeModel(MakeTinyModel(ModelConfig::Tiny()));
  EXPECT_EQ(mean.default_flow_steps, 0);
  EXPECT_TRUE(absl::StartsWith(CheckParams({.class_id = 1, .flow_steps = 2}, mean).message(),
                               "flow_steps: the model has no flow head"));
}

TEST(FlowTrainingTest, LossFallsAndCheckpointsRoundTrip) {
  ModelConfig config = TinyFlowConfig();
  config.flow_width = 32;
  torch::manual_seed(4);
  Dart model(config);
  NoiseSchedule schedule(config);
  const torch::Tensor images = torch::rand({8, 1, 8, 8}) * 2 - 1;
  const torch::Tensor labels = torch::arange(8, torch::kLong) % 10;
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(2e-3));
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  double first = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    DartLoss loss = ComputeDartLoss(model, schedule, images, labels, gen);
    ASSERT_TRUE(loss.flow.defined());
    if (step == 0) first = loss.flow.item<double>();
    last = loss.flow.item<double>();
    opt.zero_grad();
    loss.loss.backward();
    opt.step();
  }
  EXPECT_LT(last, first / 2) << first << " -> " << last;

  const std::string dir = ::testing::TempDir() + "/flow_ckpt";
  ASSERT_TRUE(SaveCheckpoint(dir, model).ok());
  absl::StatusOr<Dart> loaded = LoadCheckpoint(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->config().head, OutputHead::kFlow);
  EXPECT_EQ((*loaded)->config().flow_solver, FlowSolver::kHeun);
  Sampler a(model), b(*loaded);
  auto ia = a.Generate({.class_id = 1, .seed = 2, .guidance_scale = 1.5f});
  auto ib = b.Generate({.class_id = 1, .seed = 2, .guidance_scale = 1.5f});
  ASSERT_TRUE(ia.ok() && ib.ok());
  EXPECT_TRUE(torch::equal(*ia, *ib));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dartserve::model
