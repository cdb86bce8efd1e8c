#include <gtest/gtest.h>

#include "model/loss.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::model {
namespace {

// Eight fixed 8x8 images with smooth random structure in [-1, 1], one per class.
torch::Tensor FixedImages() {
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(123);
  const torch::Tensor coarse = torch::rand({8, 1, 4, 4}, gen, torch::kFloat) * 2 - 1;
  return coarse.repeat_interleave(2, 2).repeat_interleave(2, 3);
}

TEST(TrainingTest, LossIsDeterministicGivenTheGenerator) {
  ModelConfig config = ModelConfig::Tiny();
  Dart model = dartserve::testing::MakeTinyModel(config);
  const NoiseSchedule schedule(config);
  const torch::Tensor images = FixedImages();
  const torch::Tensor ids = torch::arange(8, torch::kLong);
  torch::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(9);
  torch::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(9);
  const DartLoss a = ComputeDartLoss(model, schedule, images, ids, g1);
  const DartLoss b = ComputeDartLoss(model, schedule, images, ids, g2);
  EXPECT_TRUE(std::isfinite(a.loss.item<double>()));
  EXPECT_EQ(a.loss.item<double>(), b.loss.item<double>());
  EXPECT_EQ(a.per_block.sizes(), (std::vector<int64_t>{config.num_steps}));
}

// The tiny model must be able to memorise a handful of images: the loss falls at least 10x within a
// bounded number of CPU steps. Catches broken gradients, masks that leak or block learning, and
// optimiser wiring, for DART and for DART-AR's shifted, causal sequence.
class OverfitTest : public ::testing::TestWithParam<Variant> {};

TEST_P(OverfitTest, TinyModelOverfitsEightImages) {
  torch::manual_seed(0);
  ModelConfig config = ModelConfig::Tiny();
  config.variant = GetParam();
  config.cond_dropout = 0.0;
  config.width = 64;
  config.heads = 4;
  Dart model(config);  // standard initialisation, AdaLN-Zero included
  model->train();
  const NoiseSchedule schedule(config);
  const torch::Tensor images = FixedImages();
  const torch::Tensor ids = torch::arange(8, torch::kLong);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-3).weight_decay(0));
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);

  std::vector<double> losses;
  for (int step = 0; step < 400; ++step) {
    const DartLoss l = ComputeDartLoss(model, schedule, images, ids, gen);
    opt.zero_grad();
    l.loss.backward();
    opt.step();
    losses.push_back(l.loss.item<double>());
    ASSERT_TRUE(std::isfinite(losses.back())) << "step " << step;
  }
  const auto mean = [&](size_t from, size_t n) {
    double s = 0;
    for (size_t i = from; i < from + n; ++i) s += losses[i];
    return s / n;
  };
  const double first = mean(0, 5), last = mean(losses.size() - 20, 20);
  EXPECT_GE(first / last, 10.0) << "first " << first << " last " << last;
}

INSTANTIATE_TEST_SUITE_P(Variants, OverfitTest, ::testing::Values(Variant::kDart, Variant::kDartAr),
                         [](const auto& info) {
                           return info.param == Variant::kDart ? "Dart" : "DartAr";
                         });

}  // namespace
}  // namespace dartserve::model
