// The DART transformer's two paths (teacher-forced and KV-cached) and its block-causal mask.
#include "model/dart.h"

#include <gtest/gtest.h>

#include "model/decode_attention.h"
#include "model/sampler.h"
#include "model/torch_compat.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::model {

// Readable test names for parameterised configs.
void PrintTo(const ModelConfig& c, std::ostream* os) {
  *os << c.image_size << "x" << c.image_size << "x" << c.channels << " p" << c.patch_size << " T"
      << c.num_steps << " w" << c.width;
}

namespace {

using dartserve::testing::MakeTinyModel;

ModelConfig TinyWithAbsolutePositions() {
  ModelConfig c = ModelConfig::Tiny();
  c.absolute_positions = true;
  return c;
}

class CachedVsFullTest : public ::testing::TestWithParam<ModelConfig> {};

// Step-by-step sampling with the KV cache must see exactly what a full-sequence teacher-forced
// forward over the same trajectory sees: this checks the mask, RoPE positions, step embeddings and
// the cache bookkeeping together.
TEST_P(CachedVsFullTest, PerStepOutputsMatchTeacherForcedForward) {
  const ModelConfig config = GetParam();
  Dart model = MakeTinyModel(config);
  Sampler sampler(model);
  auto state = sampler.Start({.class_id = 3, .seed = 7});
  ASSERT_TRUE(state.ok()) << state.status();
  GenerationState* s = state->get();
  std::vector<torch::Tensor> inputs, outputs;
  while (!s->finished()) {
    inputs.push_back(s->next_input().clone());
    ASSERT_TRUE(sampler.Step({&s, 1}).ok());
    outputs.push_back(s->x0().clone());
  }
  ASSERT_EQ(static_cast<int>(inputs.size()), config.num_steps);

  torch::NoGradGuard no_grad;
  const torch::Tensor trajectory = torch::cat(inputs).unsqueeze(0);  // [1, T*K, d]
  const torch::Tensor full = model->forward(trajectory, torch::tensor({3}, torch::kLong))[0];
  const int64_t k = config.tokens_per_block();
  for (int b = 0; b < config.num_steps; ++b) {
    const double diff = (full.narrow(0, b * k, k) - outputs[b]).abs().max().item<double>();
    EXPECT_LE(diff, 1e-4) << "block " << b;
  }
  // The prefix forward (recompute baseline) agrees too.
  const torch::Tensor prefix =
      model->forward(trajectory.narrow(1, 0, 2 * k), torch::tensor({3}, torch::kLong))[0];
  EXPECT_LE((prefix - full.narrow(0, 0, 2 * k)).abs().max().item<double>(), 1e-5);
}

constexpr const char* kConfigNames[] = {"Tiny", "RgbPatch3", "AbsolutePositions"};
INSTANTIATE_TEST_SUITE_P(Configs, CachedVsFullTest,
                         ::testing::Values(ModelConfig::Tiny(), dartserve::testing::TinyRgbConfig(),
                                           TinyWithAbsolutePositions()),
                         [](const auto& info) { return std::string(kConfigNames[info.index]); });

// With RoPE alone a token knows only where the others are relative to it: on a constant input
// every position computes the same features (its attention weights differ, but they average
// identical values). absolute_positions gives each raster position its own.
TEST(DartTest, AbsolutePositionsTellTokensApart) {
  torch::NoGradGuard no_grad;
  for (const bool absolute : {false, true}) {
    ModelConfig config = ModelConfig::Tiny();
    config.absolute_positions = absolute;
    Dart model = MakeTinyModel(config);
    const torch::Tensor x = torch::full({1, config.tokens_per_block(), config.token_dim()}, 0.3f);
    const torch::Tensor features = model->ForwardFeatures(x, torch::tensor({2}, torch::kLong))[0];
    const double spread = (features - features[0]).abs().max().item<double>();
    if (absolute) {
      EXPECT_GT(spread, 1e-3);
    } else {
      EXPECT_LT(spread, 1e-5);
    }
  }
}

// A block's outputs never depend on a cleaner block's inputs: their gradients are exactly zero,
// while every noisier block (and the block itself) does influence them.
TEST(DartTest, BlockCausality) {
  const ModelConfig config = ModelConfig::Tiny();
  Dart model = MakeTinyModel(config);
  const int64_t k = config.tokens_per_block();
  const int64_t t = config.num_steps;
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  for (int64_t b = 0; b < t; ++b) {
    torch::Tensor x =
        torch::randn({2, t * k, config.token_dim()}, gen, torch::kFloat).requires_grad_(true);
    const torch::Tensor out = model->forward(x, torch::tensor({1, 4}, torch::kLong));
    out.narrow(1, b * k, k).pow(2).sum().backward();
    const torch::Tensor grad = x.grad();
    for (int64_t other = 0; other < t; ++other) {
      const double g = grad.narrow(1, other * k, k).abs().max().item<double>();
      if (other > b) {
        EXPECT_EQ(g, 0.0) << "block " << b << " depends on cleaner block " << other;
      } else {
        EXPECT_GT(g, 0.0) << "block " << b << " ignores block " << other;
      }
    }
  }
}

// DART-AR: the output at position i depends on tokens 0..i and never on a later one.
TEST(DartArTest, TokenCausality) {
  const ModelConfig config = dartserve::testing::TinyArConfig();
  Dart model = MakeTinyModel(config);
  const int64_t len = config.sequence_length();
  ASSERT_EQ(len, (config.num_steps + 1) * config.tokens_per_block() - 1);
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  for (int64_t i : {int64_t{0}, int64_t{5}, len / 2, len - 1}) {
    torch::Tensor x =
        torch::randn({2, len, config.token_dim()}, gen, torch::kFloat).requires_grad_(true);
    model->forward(x, torch::tensor({1, 4}, torch::kLong)).select(1, i).pow(2).sum().backward();
    const torch::Tensor grad = x.grad().abs().amax({0, 2});  // [len]
    if (i + 1 < len) {
      EXPECT_EQ(grad.narrow(0, i + 1, len - i - 1).max().item<double>(), 0.0) << i;
    }
    EXPECT_GT(grad[i].item<double>(), 0.0) << i;
    EXPECT_GT(grad[0].item<double>(), 0.0) << i;
  }
}

// DART-AR sampling feeds x_T, then one token per step, through the KV cache; each step's
// prediction must equal the teacher-forced forward's at the same position (position K - 1 + g
// predicts the g-th generated token), for conditional and unconditional rows.
TEST(DartArTest, TokenStepsMatchTeacherForcedForward) {
  const ModelConfig config = dartserve::testing::TinyArConfig();
  Dart model = MakeTinyModel(config);
  Sampler sampler(model);
  auto state = sampler.Start({.class_id = 3, .seed = 7, .guidance_scale = 2.0f});
  ASSERT_TRUE(state.ok()) << state.status();
  GenerationState* s = state->get();
  const int64_t k = config.tokens_per_block();
  std::vector<torch::Tensor> inputs, predictions;
  while (!s->finished()) {
    inputs.push_back(s->next_input().clone());
    const int64_t position = s->steps_done() % k;
    ASSERT_TRUE(sampler.Step({&s, 1}).ok());
    predictions.push_back(s->x0()[position].clone());
  }
  ASSERT_EQ(static_cast<int>(predictions.size()), config.generation_steps());
  EXPECT_EQ(inputs.front().size(0), k);  // x_T first, then single tokens
  EXPECT_EQ(inputs.back().size(0), 1);

  torch::NoGradGuard no_grad;
  const torch::Tensor trajectory = torch::cat(inputs).unsqueeze(0);
  ASSERT_EQ(trajectory.size(1), config.sequence_length());
  const torch::Tensor out = model->forward(trajectory.expand({2, -1, -1}),
                                           torch::tensor({3, config.null_class()}, torch::kLong));
  const torch::Tensor guided = out[1] + 2.0 * (out[0] - out[1]);
  for (size_t g = 0; g < predictions.size(); ++g) {
    EXPECT_LE((guided[k - 1 + g] - predictions[g]).abs().max().item<double>(), 1e-4) << g;
  }
  // The clean block is fed back as predicted: the last K - 1 inputs are the final image's tokens.
  const torch::Tensor image_tokens = s->x0();
  EXPECT_LE((trajectory[0].narrow(0, config.sequence_length() - (k - 1), k - 1) -
             image_tokens.narrow(0, 0, k - 1))
                .abs()
                .max()
                .item<double>(),
            1e-6);
}

// One query per row over that row's own cache prefix, read in place: the same as the generic
// attention over the prefix, for rows of different lengths and a head size that is not a multiple
// of the kernel's eight lanes. The caches past each length hold NaN, so reading one would show.
TEST(DecodeAttentionTest, EqualsAttentionOverEachRowsPrefix) {
  torch::NoGradGuard no_grad;
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const int64_t heads = 3, d = 12, capacity = 10;
  const std::vector<int64_t> lengths = {1, 7, 10, 4};
  const int64_t rows = static_cast<int64_t>(lengths.size());
  const torch::Tensor q = torch::randn({rows, heads, 1, d}, gen);
  std::vector<torch::Tensor> keys, values;
  for (int64_t r = 0; r < rows; ++r) {
    for (auto* list : {&keys, &values}) {
      torch::Tensor cache = torch::full({heads, capacity, d}, NAN);
      cache.narrow(1, 0, lengths[r]).copy_(3 * torch::randn({heads, lengths[r], d}, gen));
      list->push_back(cache);
    }
  }
  ASSERT_TRUE(DecodeAttentionApplies(q));
  const torch::Tensor out = DecodeAttention(q, keys, values, lengths);
  ASSERT_EQ(out.sizes(), q.sizes());
  for (int64_t r = 0; r < rows; ++r) {
    const torch::Tensor expected =
        Attention(q[r], keys[r].narrow(1, 0, lengths[r]), values[r].narrow(1, 0, lengths[r]));
    EXPECT_LE((out[r] - expected).abs().max().item<double>(), 1e-5) << "row " << r;
  }
  // Blocks of tokens, other dtypes and autograd take the generic path.
  EXPECT_FALSE(DecodeAttentionApplies(torch::randn({rows, heads, 2, d})));
  EXPECT_FALSE(DecodeAttentionApplies(q.to(torch::kDouble)));
  EXPECT_FALSE(DecodeAttentionApplies(torch::randn({rows, heads, 1, d}).requires_grad_(true)));
}

TEST(DartTest, ZeroInitialisedModelPredictsZero) {
  // AdaLN-Zero: before training every block is the identity and the head outputs zero.
  Dart model(ModelConfig::Tiny());
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({1, ModelConfig::Tiny().sequence_length(), 4});
  EXPECT_EQ(model->forward(x, torch::tensor({0}, torch::kLong)).abs().max().item<float>(), 0.0f);
}

TEST(DartTest, PatchifyRoundTrip) {
  const torch::Tensor images = torch::randn({2, 3, 12, 12});
  const torch::Tensor tokens = Patchify(images, 3);
  EXPECT_EQ(tokens.sizes(), (std::vector<int64_t>{2, 16, 27}));
  // Token 1 is the patch at row 0, column 1.
  EXPECT_TRUE(
      torch::equal(tokens[0][1].view({3, 3, 3}), images[0].narrow(1, 0, 3).narrow(2, 3, 3)));
  EXPECT_TRUE(torch::equal(Unpatchify(tokens, 3, 3, 12), images));
}

}  // namespace
}  // namespace dartserve::model
