#include "model/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace dartserve::model {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(ModelConfigTest, DefaultAndTinyAreValid) {
  EXPECT_TRUE(ModelConfig().Validate().ok());
  EXPECT_TRUE(ModelConfig::Tiny().Validate().ok());
}

TEST(ModelConfigTest, DerivedSizes) {
  ModelConfig c;  // 28x28 gray, patch 4
  EXPECT_EQ(c.grid(), 7);
  EXPECT_EQ(c.tokens_per_block(), 49);
  EXPECT_EQ(c.token_dim(), 16);
  EXPECT_EQ(c.sequence_length(), 16 * 49);
  EXPECT_EQ(c.head_dim(), 64);
  EXPECT_EQ(c.mlp_hidden() % 32, 0);
  EXPECT_EQ(c.condition_bytes_per_row(), (int64_t{6} * c.depth + 2) * c.width * 4);
  EXPECT_EQ(c.kv_bytes_per_row(),
            int64_t{2} * c.depth * 16 * 49 * c.width * 4 + c.condition_bytes_per_row());
}

TEST(ModelConfigTest, JsonRoundTrip) {
  ModelConfig c = ModelConfig::Tiny();
  c.snr_shift = 2.0;
  c.loss_weight = LossWeight::kPaperSum;
  c.conditioning = Conditioning::kNone;
  absl::StatusOr<ModelConfig> back = ModelConfigFromJson(ModelConfigToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ModelConfigToJson(*back), ModelConfigToJson(c));
  EXPECT_EQ(back->snr_shift, 2.0);
  EXPECT_EQ(back->loss_weight, LossWeight::kPaperSum);
  EXPECT_EQ(back->conditioning, Conditioning::kNone);
}

// Written only when on, so configs saved before the field existed stay byte-identical.
TEST(ModelConfigTest, AbsolutePositionsWrittenOnlyWhenOn) {
  ModelConfig c = ModelConfig::Tiny();
  EXPECT_THAT(ModelConfigToJson(c), Not(HasSubstr("absolute_positions")));
  c.absolute_positions = true;
  absl::StatusOr<ModelConfig> back = ModelConfigFromJson(ModelConfigToJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->absolute_positions);
}

TEST(ModelConfigTest, PartialJsonKeepsDefaults) {
  absl::StatusOr<ModelConfig> c = ModelConfigFromJson(R"({"width": 128, "heads": 2})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->width, 128);
  EXPECT_EQ(c->depth, ModelConfig().depth);
}

// An autoencoder's config.json (model/autoencoder.h) is refused by its kind, not by whichever of
// its fields DART does not know.
TEST(ModelConfigTest, OtherKindsAreRefusedByKind) {
  absl::StatusOr<ModelConfig> c =
      ModelConfigFromJson(R"({"kind": "autoencoder", "base_width": 32, "image_size": 64})");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(c.status().message()),
            "kind: \"autoencoder\" is not a DART model's config");
}

// A kind nested a million levels deep parses, but dump() recurses once per level: quoting it in
// the error overflowed the stack.
TEST(ModelConfigTest, DeeplyNestedKindIsAnErrorNotAStackOverflow) {
  constexpr int kDepth = 1'000'000;
  absl::StatusOr<ModelConfig> c = ModelConfigFromJson(R"({"kind": )" + std::string(kDepth, '[') +
                                                      std::string(kDepth, ']') + "}");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(std::string(c.status().message()), "kind: an array is not a DART model's config");
}

// Every field in range, but T x (image_size / patch_size)^2 tokens overflowed the int token counts
// (sequence_length() = 1024 x 4096^2; UndefinedBehaviorSanitizer in fuzz/model_config_fuzzer.cc).
TEST(ModelConfigTest, SequenceLongerThanTheTokenCountsHoldIsRefused) {
  absl::StatusOr<ModelConfig> c =
      ModelConfigFromJson(R"({"image_size": 4096, "patch_size": 1, "num_steps": 1024})");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("num_steps: the sequence"));
  // 2^24 tokens is the most accepted.
  c = ModelConfigFromJson(R"({"image_size": 4096, "patch_size": 1, "num_steps": 1})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sequence_length(), 1 << 24);
  c = ModelConfigFromJson(
      R"({"image_size": 4096, "patch_size": 1, "num_steps": 1, "variant": "dart_ar"})");
  ASSERT_FALSE(c.ok());
}

struct BadCase {
  const char* json;
  const char* field;
};

class BadConfigTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadConfigTest, ErrorNamesTheField) {
  absl::StatusOr<ModelConfig> c = ModelConfigFromJson(GetParam().json);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(GetParam().field));
}

INSTANTIATE_TEST_SUITE_P(
    Fields, BadConfigTest,
    ::testing::Values(
        BadCase{"not json", "JSON"}, BadCase{"[1, 2]", "object"},
        BadCase{R"({"image_size": 0})", "image_size"},
        BadCase{R"({"image_size": "big"})", "image_size"},
        BadCase{R"({"channels": 2})", "channels"}, BadCase{R"({"patch_size": 5})", "patch_size"},
        BadCase{R"({"num_steps": 0})", "num_steps"}, BadCase{R"({"snr_shift": -1})", "snr_shift"},
        BadCase{R"({"schedule": "linear"})", "schedule"},
        BadCase{R"({"loss_weight": "elbo"})", "loss_weight"}, BadCase{R"({"width": 130})", "heads"},
        BadCase{R"({"depth": 0})", "depth"},
        BadCase{R"({"conditioning": "audio"})", "conditioning"},
        BadCase{R"({"num_classes": 0})", "num_classes"},
        BadCase{R"({"cond_dropout": 1.5})", "cond_dropout"},
        BadCase{R"({"head": "diffusion"})", "head"},
        BadCase{R"({"head": "flow", "flow_steps": 0})", "flow_steps"},
        BadCase{R"({"flow_solver": "rk4"})", "flow_solver"},
        BadCase{R"({"flow_width": 2})", "flow_width"}, BadCase{R"({"variant": "mar"})", "variant"},
        BadCase{R"({"absolute_positions": 1})", "absolute_positions"},
        BadCase{R"({"widht": 64})", "widht"}));

}  // namespace
}  // namespace dartserve::model
