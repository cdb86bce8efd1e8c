// Text-conditioned DART: cross-attention to the prompt, the pooled prompt in AdaLN, prompts through
// the sampler, the loss and checkpoints.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/dart.h"
#include "model/loss.h"
#include "model/sampler.h"
#include "model/schedule.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::model {
namespace {

namespace fs = std::filesystem;
using dartserve::testing::MakeTinyModel;
using dartserve::testing::TinyTextConfig;
using ::testing::HasSubstr;

constexpr char kRed[] = "a small red circle at the top left on a white background";
constexpr char kBlue[] = "blue square";

double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TextBatch Encode(Dart& model, const std::vector<std::string>& prompts) {
  absl::StatusOr<TextBatch> ids = model->EncodePrompts(prompts);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return *std::move(ids);
}

torch::Tensor Trajectory(const ModelConfig& c, int blocks, uint64_t seed, int64_t rows = 1) {
  torch::manual_seed(seed);
  return torch::randn({rows, blocks * c.tokens_per_block(), c.token_dim()});
}

TEST(TextDartTest, PromptsArePaddedToTheMaximumAndTooLongOnesAreRefused) {
  Dart model = MakeTinyModel(TinyTextConfig());
  const TextBatch ids = Encode(model, {kBlue, ""});
  const int64_t max_tokens = TinyTextConfig().text_max_tokens;
  EXPECT_EQ(ids.tokens.sizes(), (std::vector<int64_t>{2, max_tokens}));
  EXPECT_EQ(ids.mask[1].sum().item<int64_t>(), 2);  // the empty prompt is BOS, EOS
  const absl::StatusOr<TextBatch> too_long = model->EncodePrompts(std::vector<std::string>{kRed});
  ASSERT_FALSE(too_long.ok());  // 12 words and BOS, EOS do not fit 12 ids
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
}

// The prompt reaches the image tokens: different prompts give different predictions, through the
// pooled AdaLN vector and through cross-attention each.
TEST(TextDartTest, ThePromptChangesThePrediction) {
  Dart model = MakeTinyModel(TinyTextConfig());
  torch::NoGradGuard no_grad;
  const torch::Tensor x = Trajectory(model->config(), 2, 3).expand({2, -1, -1});
  const Condition cond = model->TextCondition(Encode(model, {kBlue, "red ring"}));
  const torch::Tensor out = model->forward(x, cond);
  EXPECT_GT(MaxDiff(out[0], out[1]), 1e-3);

  // Cross-attention alone: the same AdaLN modulation for both rows, different prompt tokens.
  Condition same_vector = cond;
  same_vector.final_mod = cond.final_mod.narrow(0, 0, 1).expand({2, -1});
  for (torch::Tensor& m : same_vector.block_mod) m = m.narrow(0, 0, 1).expand({2, -1});
  const torch::Tensor cross_only = model->forward(x, same_vector);
  EXPECT_GT(MaxDiff(cross_only[0], cross_only[1]), 1e-3);
}

// Extra padding around a prompt changes nothing: the padded keys are masked out of the
// cross-attention and the encoder ignores them.
TEST(TextDartTest, PaddingDoesNotChangeThePrediction) {
  Dart model = MakeTinyModel(TinyTextConfig());
  torch::NoGradGuard no_grad;
  const torch::Tensor x = Trajectory(model->config(), 2, 4);
  const TextBatch full = Encode(model, {kBlue});
  const int64_t real = full.mask.sum().item<int64_t>();
  const TextBatch tight{full.tokens.narrow(1, 0, real), full.mask.narrow(1, 0, real)};
  const TextBatch odd_pad{torch::where(full.mask, full.tokens, torch::full_like(full.tokens, 7)),
                          full.mask};
  const torch::Tensor a = model->forward(x, model->TextCondition(full));
  EXPECT_LE(MaxDiff(a, model->forward(x, model->TextCondition(tight))), 1e-5);
  EXPECT_LE(MaxDiff(a, model->forward(x, model->TextCondition(odd_pad))), 1e-5);
}

// Steps through the KV cache, with the prompt's cross K/V computed once, equal the teacher-forced
// forward over the whole trajectory.
TEST(TextDartTest, CachedStepsEqualTheTeacherForcedForward) {
  Dart model = MakeTinyModel(TinyTextConfig());
  const ModelConfig& c = model->config();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = Trajectory(c, c.num_steps, 5, 2);
  const Condition cond = model->TextCondition(Encode(model, {kBlue, "green cross"}));
  const torch::Tensor full = model->forward(x, cond);
  KvCache a = KvCache::Allocate(c, model->options()), b = KvCache::Allocate(c, model->options());
  KvCache* caches[] = {&a, &b};
  const int64_t k = c.tokens_per_block();
  for (int block = 0; block < c.num_steps; ++block) {
    const torch::Tensor step = model->ForwardStep(x.narrow(1, block * k, k), cond, caches);
    EXPECT_LE(MaxDiff(step, full.narrow(1, block * k, k)), 1e-4) << "block " << block;
  }
}

std::vector<torch::Tensor> RunAlone(Sampler& sampler, const GenerateParams& p) {
  auto s = sampler.Start(p);
  EXPECT_TRUE(s.ok()) << s.status();
  GenerationState* ptr = s->get();
  std::vector<torch::Tensor> x0s;
  while (!ptr->finished()) {
    EXPECT_TRUE(sampler.Step({&ptr, 1}).ok());
    x0s.push_back(ptr->x0().clone());
  }
  return x0s;
}

// Guidance combines the prompt's branch with the empty prompt's; w = 1 is the prompt's branch
// alone and w = 0 the empty prompt alone. For every head.
class TextSamplerTest : public ::testing::TestWithParam<OutputHead> {
 protected:
  static ModelConfig Config(OutputHead head) {
    return dartserve::testing::WithTinyText(
        head == OutputHead::kFlow ? dartserve::testing::TinyFlowConfig() : ModelConfig::Tiny());
  }
};

TEST_P(TextSamplerTest, GuidanceEndpointsAndKvMemory) {
  Dart model = MakeTinyModel(Config(GetParam()));
  Sampler sampler(model);
  auto one = sampler.Start({.prompt = kBlue, .seed = 5});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ((*one)->kv_bytes(), model->config().kv_bytes_per_row());
  EXPECT_GT(model->config().condition_bytes_per_row(),
            (int64_t{6} * model->config().depth + 2) * model->config().width * 4);
  auto two = sampler.Start({.prompt = kBlue, .seed = 5, .guidance_scale = 3.0f});
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ((*two)->kv_bytes(), 2 * model->config().kv_bytes_per_row());

  const auto w1 = RunAlone(sampler, {.prompt = kBlue, .seed = 5});
  const auto w0 = RunAlone(sampler, {.prompt = kBlue, .seed = 5, .guidance_scale = 0.0f});
  const auto empty = RunAlone(sampler, {.seed = 5});
  for (size_t i = 0; i < w0.size(); ++i) EXPECT_LE(MaxDiff(w0[i], empty[i]), 1e-5) << i;
  EXPECT_GT(MaxDiff(w1.back(), empty.back()), 1e-3);
}

// A text request's trajectory is the same alone and batched with other prompts at other steps.
TEST_P(TextSamplerTest, BatchInvariance) {
  Sampler sampler(MakeTinyModel(Config(GetParam())));
  const GenerateParams target{.prompt = kBlue, .seed = 11, .guidance_scale = 2.0f};
  const std::vector<torch::Tensor> alone = RunAlone(sampler, target);

  auto early = sampler.Start({.prompt = "red ring", .seed = 1});
  ASSERT_TRUE(early.ok());
  GenerationState* e = early->get();
  ASSERT_TRUE(sampler.Step({&e, 1}).ok());
  auto s = sampler.Start(target);
  auto other = sampler.Start({.seed = 2, .guidance_scale = 4.0f});
  ASSERT_TRUE(s.ok() && other.ok());
  std::vector<GenerationState*> batch = {e, s->get(), other->get()};
  for (size_t i = 0; i < alone.size(); ++i) {
    std::vector<GenerationState*> live;
    for (GenerationState* g : batch) {
      if (!g->finished()) live.push_back(g);
    }
    ASSERT_TRUE(sampler.Step(live).ok());
    EXPECT_LE(MaxDiff((*s)->x0(), alone[i]), 1e-5) << "step " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Heads, TextSamplerTest,
                         ::testing::Values(OutputHead::kMean, OutputHead::kFlow),
                         [](const auto& info) {
                           return info.param == OutputHead::kMean ? "Mean" : "Flow";
                         });

TEST(TextDartTest, SamplerValidatesThePrompt) {
  Sampler sampler(MakeTinyModel(TinyTextConfig()));
  const absl::Status too_long = sampler.Validate({.prompt = kRed});
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_long.message()), HasSubstr("prompt"));
  const absl::Status class_id = sampler.Validate({.class_id = 1});
  EXPECT_EQ(class_id.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(class_id.message()), HasSubstr("class_id"));
  EXPECT_TRUE(sampler.Validate({.prompt = kBlue, .guidance_scale = 3.0f}).ok());

  // A class model refuses prompts (the server maps class names to ids before this).
  Sampler class_sampler(MakeTinyModel());
  EXPECT_THAT(std::string(class_sampler.Validate({.prompt = kBlue}).message()),
              HasSubstr("prompt"));
}

// Text loss: dropout to the empty prompt at the configured rate, gradients reach the text encoder
// and the cross-attention, and a few steps on fixed captions lower it.
TEST(TextDartTest, LossTrainsTheTextPath) {
  ModelConfig c = TinyTextConfig();
  Dart model(c);
  model->set_tokenizer(dartserve::testing::TinyTokenizer());
  model->train();
  const NoiseSchedule schedule(c);
  torch::manual_seed(0);
  const torch::Tensor images = torch::rand({4, 1, 8, 8}) * 2 - 1;
  const TextBatch prompts = Encode(model, {kBlue, "red ring", "green cross", ""});
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : model->named_parameters()) before[p.key()] = p.value().detach().clone();
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(3e-3));
  double first = 0, last = 0;
  for (int step = 0; step < 40; ++step) {
    torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(step);
    opt.zero_grad();
    const DartLoss loss = ComputeDartLoss(model, schedule, images, prompts, gen);
    loss.loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.loss.item<double>();
  }
  // Every parameter of the text path learned something (none is cut off from the loss).
  for (const auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    if (name.find("text_") == 0 || name.find("cross_") != std::string::npos) {
      EXPECT_GT(MaxDiff(p.value().detach(), before[name]), 0.0) << name;
    }
  }
  EXPECT_LT(last, 0.7 * first);
}

TEST(TextDartTest, CheckpointKeepsTheTokenizer) {
  Dart model = MakeTinyModel(TinyTextConfig());
  const fs::path dir = fs::path(::testing::TempDir()) / "text_checkpoint";
  fs::remove_all(dir);
  ASSERT_TRUE(SaveCheckpoint(dir.string(), model).ok());
  EXPECT_TRUE(fs::exists(dir / kTokenizerFile));
  absl::StatusOr<Dart> back = LoadCheckpoint(dir.string());
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_NE((*back)->tokenizer(), nullptr);
  torch::NoGradGuard no_grad;
  const torch::Tensor x = Trajectory(model->config(), 1, 9);
  EXPECT_LE(MaxDiff(model->forward(x, model->TextCondition(Encode(model, {kBlue}))),
                    (*back)->forward(x, (*back)->TextCondition(Encode(*back, {kBlue})))),
            1e-6);

  fs::remove(dir / kTokenizerFile);
  const absl::StatusOr<Dart> missing = LoadCheckpoint(dir.string());
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(kTokenizerFile));

  Dart no_tokenizer(TinyTextConfig());
  EXPECT_EQ(SaveCheckpoint(dir.string(), no_tokenizer).code(),
            absl::StatusCode::kFailedPrecondition);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dartserve::model
