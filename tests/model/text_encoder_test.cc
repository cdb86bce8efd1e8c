#include "model/text/text_encoder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "model/config.h"
#include "nlohmann/json.hpp"
#include "tests/testing/tiny_model.h"

namespace dartserve::model {
namespace {

using ::dartserve::testing::RandomizeParameters;
using ::dartserve::testing::TinyTextConfig;
using ::testing::HasSubstr;

constexpr int kPad = 0;
constexpr int kBos = 2;
constexpr int kEos = 3;

// Random weights (embedding, norms and projections alike), so every check below depends on them.
TextEncoder MakeEncoder(const ModelConfig& config = TinyTextConfig(), uint64_t seed = 7) {
  torch::set_num_threads(1);
  TextEncoder encoder(config);
  RandomizeParameters(*encoder, seed, /*stddev=*/0.3);
  encoder->eval();
  return encoder;
}

TextFeatures Encode(TextEncoder& encoder, const std::vector<std::vector<int>>& ids,
                    int pad_id = kPad, int min_length = 0) {
  torch::NoGradGuard no_grad;
  const TextBatch batch = PadBatch(ids, pad_id, min_length);
  return encoder->forward(batch.tokens, batch.mask);
}

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST(PadBatchTest, RightPadsToTheLongestRowAndMarksRealTokens) {
  const TextBatch batch = PadBatch({{2, 5, 3}, {2, 3}, {}}, /*pad_id=*/9);
  ASSERT_EQ(batch.tokens.sizes(), (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(batch.tokens.scalar_type(), torch::kLong);
  EXPECT_EQ(batch.mask.scalar_type(), torch::kBool);
  EXPECT_TRUE(batch.tokens.equal(torch::tensor({2, 5, 3, 2, 3, 9, 9, 9, 9}).view({3, 3})));
  EXPECT_TRUE(batch.mask.equal(
      torch::tensor({true, true, true, true, true, false, false, false, false}).view({3, 3})));
  EXPECT_EQ(PadBatch({{2, 3}}, kPad, /*min_length=*/5).tokens.size(1), 5);
}

TEST(TextEncoderTest, ShapesAndPaddedPositionsAreZero) {
  TextEncoder encoder = MakeEncoder();
  const TextFeatures f = Encode(encoder, {{kBos, 10, 11, kEos}, {kBos, kEos}});
  EXPECT_EQ(f.tokens.sizes(), (std::vector<int64_t>{2, 4, 32}));
  EXPECT_EQ(f.pooled.sizes(), (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(f.mask.sizes(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(f.tokens.slice(1, 2).select(0, 1).abs().max().item<float>(), 0.0f);
  EXPECT_GT(f.tokens.select(0, 0).abs().min().item<float>(), 0.0f);
  // pooled is the mean over real positions only.
  EXPECT_LT(MaxAbsDiff(f.pooled[1], f.tokens[1].slice(0, 0, 2).mean(0)), 1e-6);
}

// The same prompt alone and inside a longer padded batch: its features must not move, whatever
// the padding id (a non-zero pad id has its own random embedding, so leaked attention would show).
TEST(TextEncoderTest, PaddingDoesNotChangeRealTokenFeatures) {
  TextEncoder encoder = MakeEncoder();
  const std::vector<int> prompt = {kBos, 10, 11, 12, kEos};
  const TextFeatures alone = Encode(encoder, {prompt});
  for (int pad_id : {kPad, 9}) {
    SCOPED_TRACE(pad_id);
    const TextFeatures padded =
        Encode(encoder, {{kBos, 5, kEos}, prompt, {kBos, 7, 8, 9, 20, 21, 22, kEos}}, pad_id, 12);
    ASSERT_EQ(padded.tokens.size(1), 12);
    EXPECT_LT(MaxAbsDiff(padded.tokens[1].slice(0, 0, 5), alone.tokens[0]), 1e-5);
    EXPECT_LT(MaxAbsDiff(padded.pooled[1], alone.pooled[0]), 1e-5);
  }
}

// Positions count real tokens, so padding between real tokens does not open gaps in them. (RoPE
// sees only relative positions, so padding in front alone would not tell.)
TEST(TextEncoderTest, PaddingBetweenTokensDoesNotShiftPositions) {
  TextEncoder encoder = MakeEncoder();
  const TextFeatures alone = Encode(encoder, {{kBos, 10, 11, kEos}});
  const torch::Tensor tokens =
      torch::tensor({9, kBos, 9, 10, 9, 9, 11, kEos}, torch::kLong).view({1, 8});
  const torch::Tensor mask =
      torch::tensor({false, true, false, true, false, false, true, true}).view({1, 8});
  torch::NoGradGuard no_grad;
  const TextFeatures gappy = encoder->forward(tokens, mask);
  const torch::Tensor real_positions = torch::tensor({1, 3, 6, 7}, torch::kLong);
  EXPECT_LT(MaxAbsDiff(gappy.tokens[0].index_select(0, real_positions), alone.tokens[0]), 1e-5);
  EXPECT_LT(MaxAbsDiff(gappy.pooled, alone.pooled), 1e-5);
}

// Without positions a bidirectional encoder is permutation-equivariant and its mean pool would
// not see the order at all.
TEST(TextEncoderTest, TokenOrderMatters) {
  TextEncoder encoder = MakeEncoder();
  const TextFeatures f = Encode(encoder, {{kBos, 10, 11, 12, kEos}, {kBos, 12, 11, 10, kEos}});
  EXPECT_GT(MaxAbsDiff(f.pooled[0], f.pooled[1]), 1e-3);
}

TEST(TextEncoderTest, ChangedTokenChangesPooledVector) {
  TextEncoder encoder = MakeEncoder();
  const TextFeatures f = Encode(encoder, {{kBos, 10, 11, kEos}, {kBos, 10, 13, kEos}});
  EXPECT_GT(MaxAbsDiff(f.pooled[0], f.pooled[1]), 1e-3);
  // Bidirectional: the change reaches the tokens before it too.
  EXPECT_GT(MaxAbsDiff(f.tokens[0][1], f.tokens[1][1]), 1e-4);
}

TEST(TextEncoderTest, AllPaddingRowsAreFiniteAndDoNotDisturbOthers) {
  TextEncoder encoder = MakeEncoder();
  const TextFeatures alone = Encode(encoder, {{kBos, 10, kEos}});
  const TextFeatures mixed = Encode(encoder, {{}, {kBos, 10, kEos}}, /*pad_id=*/9, 6);
  EXPECT_TRUE(torch::isfinite(mixed.tokens).all().item<bool>());
  EXPECT_TRUE(torch::isfinite(mixed.pooled).all().item<bool>());
  EXPECT_EQ(mixed.pooled[0].abs().max().item<float>(), 0.0f);
  EXPECT_EQ(mixed.tokens[0].abs().max().item<float>(), 0.0f);
  EXPECT_LT(MaxAbsDiff(mixed.tokens[1].slice(0, 0, 3), alone.tokens[0]), 1e-5);

  const TextFeatures only_padding = Encode(encoder, {{}, {}}, kPad, 4);
  EXPECT_TRUE(torch::isfinite(only_padding.tokens).all().item<bool>());
  EXPECT_TRUE(torch::isfinite(only_padding.pooled).all().item<bool>());

  // The self-attention guard must also keep the backward pass finite.
  encoder->train();
  const TextBatch batch = PadBatch({{}, {kBos, 10, kEos}}, 9, 6);
  const TextFeatures f = encoder->forward(batch.tokens, batch.mask);
  (f.tokens.sum() + f.pooled.sum()).backward();
  for (const torch::Tensor& p : encoder->parameters()) {
    EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>());
  }
}

TEST(TextEncoderTest, GradientReachesEveryParameterButNotThePadEmbedding) {
  TextEncoder encoder = MakeEncoder();
  encoder->train();
  const TextBatch batch = PadBatch({{kBos, 10, 11, 12, kEos}, {kBos, 20, kEos}}, kPad);
  const TextFeatures f = encoder->forward(batch.tokens, batch.mask);
  // Random projections so no gradient cancels by symmetry.
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const torch::Tensor loss = (f.tokens * torch::randn(f.tokens.sizes(), gen)).sum() +
                             (f.pooled * torch::randn(f.pooled.sizes(), gen)).sum();
  loss.backward();
  for (const auto& item : encoder->named_parameters()) {
    const torch::Tensor grad = item.value().grad();
    ASSERT_TRUE(grad.defined()) << item.key();
    EXPECT_GT(grad.abs().max().item<double>(), 0.0) << item.key();
  }
  const torch::Tensor embed_grad = encoder->named_parameters()["embed.weight"].grad();
  for (int id : {kBos, 10, 11, 12, kEos, 20}) {
    EXPECT_GT(embed_grad[id].abs().max().item<double>(), 0.0) << id;
  }
  // Padding (id 0 here) is masked out of everything real, so it learns nothing; neither does an
  // id absent from the batch.
  EXPECT_LT(embed_grad[kPad].abs().max().item<double>(), 1e-12);
  EXPECT_EQ(embed_grad[40].abs().max().item<double>(), 0.0);
}

TEST(TextEncoderTest, RejectsBadInputs) {
  TextEncoder encoder = MakeEncoder();
  const TextBatch ok = PadBatch({{kBos, kEos}}, kPad);
  EXPECT_THROW(encoder->forward(ok.tokens.to(torch::kInt), ok.mask), c10::Error);
  EXPECT_THROW(encoder->forward(ok.tokens, ok.mask.to(torch::kLong)), c10::Error);
  EXPECT_THROW(encoder->forward(ok.tokens, ok.mask.view({2, 1})), c10::Error);
  const TextBatch too_long = PadBatch({{kBos, kEos}}, kPad, /*min_length=*/13);  // max is 12
  EXPECT_THROW(encoder->forward(too_long.tokens, too_long.mask), c10::Error);
}

// Validate() names a bad text field; the tiny text config itself is valid.
struct TextFieldCase {
  const char* field;
  std::function<void(ModelConfig&)> breaks;
};

TEST(TextConfigTest, ValidateNamesTheBadTextField) {
  const std::vector<TextFieldCase> cases = {
      {"text_vocab_size", [](ModelConfig& c) { c.text_vocab_size = 0; }},
      {"text_vocab_size", [](ModelConfig& c) { c.text_vocab_size = 3; }},
      {"text_max_tokens", [](ModelConfig& c) { c.text_max_tokens = 1; }},
      {"text_width", [](ModelConfig& c) { c.text_width = 2; }},
      {"text_depth", [](ModelConfig& c) { c.text_depth = 0; }},
      {"text_heads", [](ModelConfig& c) { c.text_heads = 3; }},   // does not divide 32
      {"text_heads", [](ModelConfig& c) { c.text_heads = 32; }},  // head dim 1: no RoPE pairs
      {"text_heads", [](ModelConfig& c) { c.text_heads = 0; }},
  };
  for (const TextFieldCase& tc : cases) {
    ModelConfig c = TinyTextConfig();
    tc.breaks(c);
    const absl::Status s = c.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << tc.field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(tc.field));
  }
  EXPECT_TRUE(TinyTextConfig().Validate().ok()) << TinyTextConfig().Validate();
}

TEST(TextConfigTest, TextFieldsAreIgnoredWithoutTextConditioning) {
  ModelConfig c = ModelConfig::Tiny();  // class conditioning, text_vocab_size unset (0)
  c.text_width = 2;
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
}

TEST(TextConfigTest, JsonWritesTextFieldsOnlyForTextModels) {
  const nlohmann::json text = nlohmann::json::parse(ModelConfigToJson(TinyTextConfig()));
  EXPECT_EQ(text.at("conditioning"), "text");
  EXPECT_EQ(text.at("text_vocab_size"), 320);
  EXPECT_EQ(text.at("text_max_tokens"), 12);
  EXPECT_EQ(text.at("text_width"), 32);
  EXPECT_EQ(text.at("text_depth"), 2);
  EXPECT_EQ(text.at("text_heads"), 2);
  for (const ModelConfig& c :
       {ModelConfig(), ModelConfig::Tiny(), testing::TinyFlowConfig(), testing::TinyArConfig()}) {
    EXPECT_THAT(ModelConfigToJson(c), ::testing::Not(HasSubstr("text_")));
  }
}

// A text config round-trips through JSON, and its text fields are validated on read.
TEST(TextConfigTest, JsonReadsTheTextFieldsBack) {
  const ModelConfig original = TinyTextConfig();
  const std::string json = ModelConfigToJson(original);

  const absl::StatusOr<ModelConfig> back = ModelConfigFromJson(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->conditioning, Conditioning::kText);
  EXPECT_EQ(back->text_vocab_size, original.text_vocab_size);
  EXPECT_EQ(back->text_max_tokens, original.text_max_tokens);
  EXPECT_EQ(back->text_width, original.text_width);
  EXPECT_EQ(back->text_depth, original.text_depth);
  EXPECT_EQ(back->text_heads, original.text_heads);
  EXPECT_EQ(ModelConfigToJson(*back), json);

  nlohmann::json bad = nlohmann::json::parse(json);
  bad["text_heads"] = 5;
  const absl::StatusOr<ModelConfig> bad_heads = ModelConfigFromJson(bad.dump());
  ASSERT_FALSE(bad_heads.ok());
  EXPECT_THAT(std::string(bad_heads.status().message()), HasSubstr("text_heads"));
}

// The shipped class checkpoint's config.json must still be exactly what the writer produces.
TEST(TextConfigTest, ShippedConfigRoundTripsUnchanged) {
  std::ifstream in(std::string(DARTSERVE_SOURCE_DIR) + "/weights/fmnist-dart/config.json");
  ASSERT_TRUE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  const absl::StatusOr<ModelConfig> c = ModelConfigFromJson(text.str());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(ModelConfigToJson(*c), text.str());
}

}  // namespace
}  // namespace dartserve::model
