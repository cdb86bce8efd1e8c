// The fused CPU kernels (model/fused_cpu.h) against the generic operators they replace, and the
// whole model through both paths.
#include "model/fused_cpu.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/dart.h"
#include "model/layers.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::model {
namespace {

using dartserve::testing::MakeTinyModel;
using dartserve::testing::TinyTextConfig;

double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// A width that is not a multiple of the kernels' eight partial sums.
constexpr int64_t kRows = 3, kTokens = 5, kWidth = 20;

TEST(FusedCpuTest, NormScaleShiftEqualsTheGenericNorm) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(1);
  const torch::Tensor x = 3 * torch::randn({kRows, kTokens, kWidth});
  // Per-row scales and shifts as the blocks read them: [R, 1, D] views into wider rows.
  const torch::Tensor mod = torch::randn({kRows, 1, 3 * kWidth});
  const torch::Tensor scale = mod.narrow(2, kWidth, kWidth), shift = mod.narrow(2, 0, kWidth);
  const torch::Tensor fused = fused::NormScaleShift(x, 1e-6, scale, shift);
  ASSERT_TRUE(fused.defined());
  EXPECT_LE(MaxDiff(fused, RmsNormalize(x, 1e-6) * scale + shift), 1e-5);
  // A weight shared by every token, no shift (RmsNorm); eps large enough to matter.
  const torch::Tensor weight = torch::randn({kWidth});
  const torch::Tensor norm = fused::NormScaleShift(x, 0.5, weight, {});
  ASSERT_TRUE(norm.defined());
  EXPECT_LE(MaxDiff(norm, RmsNormalize(x, 0.5) * weight), 1e-5);
}

TEST(FusedCpuTest, QkNormRotaryEqualsNormThenRotary) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(2);
  const int64_t heads = 2, hd = 6;
  const torch::Tensor qkv = torch::randn({kRows, kTokens, 3, heads, hd});
  const torch::Tensor q_weight = torch::randn({hd}), k_weight = torch::randn({hd});
  const torch::Tensor scales = torch::stack({q_weight, k_weight}).view({2, 1, 1, 1, hd});
  const torch::Tensor qk = qkv.permute({2, 0, 3, 1, 4}).narrow(0, 0, 2);
  // Tables shared by all rows, then one per row (rows at different positions).
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{kTokens, hd}, std::vector<int64_t>{kRows, 1, kTokens, hd}}) {
    const Rotary rotary{torch::randn(shape), torch::randn(shape)};
    const torch::Tensor fused =
        fused::QkNormRotary(qkv, q_weight, k_weight, 1e-6, rotary.cos, rotary.sin);
    ASSERT_TRUE(fused.defined()) << shape.size() << "-d tables";
    EXPECT_EQ(fused.sizes(), (std::vector<int64_t>{2, kRows, heads, kTokens, hd}));
    EXPECT_LE(MaxDiff(fused, rotary.Apply(RmsNormalize(qk, 1e-6) * scales)), 1e-5)
        << shape.size() << "-d tables";
  }
}

TEST(FusedCpuTest, GatedResidualEqualsMulAdd) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({kRows, kTokens, kWidth});
  const torch::Tensor y = torch::randn({kRows, kTokens, kWidth});
  const torch::Tensor gate = torch::randn({kRows, 1, 2 * kWidth}).narrow(2, kWidth, kWidth);
  const torch::Tensor fused = fused::GatedResidual(x, gate, y);
  ASSERT_TRUE(fused.defined());
  EXPECT_LE(MaxDiff(fused, x + gate * y), 1e-6);
}

// Outside inference in fp32 on the CPU, or in a layout the kernels do not take, they decline and
// the caller runs the generic operators.
TEST(FusedCpuTest, DeclinesOutsideTheFastPath) {
  const torch::Tensor x = torch::randn({kRows, kTokens, kWidth});
  const torch::Tensor w = torch::randn({kWidth});
  EXPECT_FALSE(fused::NormScaleShift(x, 1e-6, w, {}).defined()) << "autograd enabled";
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(fused::NormScaleShift(x, 1e-6, w, {}).defined());
  EXPECT_FALSE(
      fused::NormScaleShift(x.to(torch::kDouble), 1e-6, w.to(torch::kDouble), {}).defined());
  EXPECT_FALSE(fused::NormScaleShift(x.transpose(0, 1), 1e-6, w, {}).defined());
  EXPECT_FALSE(fused::NormScaleShift(x, 1e-6, torch::randn({kWidth + 1}), {}).defined());
  EXPECT_FALSE(fused::GatedResidual(x, torch::randn({kRows, 2, kWidth}), x).defined());
  const torch::Tensor qkv = torch::randn({kRows, kTokens, 3, 2, 5});  // odd head_dim
  EXPECT_FALSE(fused::QkNormRotary(qkv, torch::randn({5}), torch::randn({5}), 1e-6,
                                   torch::randn({kTokens, 5}), torch::randn({kTokens, 5}))
                   .defined());
}

// The whole model, class- and text-conditioned: the inference path (fused kernels) computes what
// the autograd path (generic operators) does.
TEST(FusedCpuTest, ModelForwardEqualsTheGenericPath) {
  for (const ModelConfig& config : {ModelConfig::Tiny(), TinyTextConfig()}) {
    Dart model = MakeTinyModel(config);
    torch::manual_seed(4);
    const torch::Tensor x = torch::randn({2, 2 * config.tokens_per_block(), config.token_dim()});
    const auto forward = [&] {
      if (config.conditioning != Conditioning::kText) {
        return model->forward(x, model->ClassCondition(torch::tensor({3, 5})));
      }
      const std::vector<std::string> prompts = {"red ring", ""};
      absl::StatusOr<TextBatch> ids = model->EncodePrompts(prompts);
      EXPECT_TRUE(ids.ok()) << ids.status();
      return model->forward(x, model->TextCondition(*ids));
    };
    const torch::Tensor with_grad = forward();
    ASSERT_TRUE(with_grad.requires_grad());  // autograd on: the generic operators ran
    const torch::Tensor generic = with_grad.detach();
    torch::Tensor inference;
    {
      c10::InferenceMode mode;
      inference = forward();
    }
    EXPECT_GT(generic.abs().max().item<double>(), 1e-2);  // not the zero function
    EXPECT_LE(MaxDiff(inference, generic), 1e-4) << config.width;
  }
}

}  // namespace
}  // namespace dartserve::model
