#include "eval/classifier.h"

#include <gtest/gtest.h>

namespace dartserve::eval {
namespace {

TEST(FrechetDistanceTest, ZeroForIdenticalSetsAndMeanShiftOtherwise) {
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const torch::Tensor a = torch::randn({4000, 6}, gen, torch::kDouble);
  EXPECT_NEAR(FrechetDistance(a, a), 0.0, 1e-6);
  // Same covariance, mean shifted by (1, 2, 0, ...): distance |shift|^2 = 5.
  torch::Tensor shift = torch::zeros({6}, torch::kDouble);
  shift[0] = 1;
  shift[1] = 2;
  EXPECT_NEAR(FrechetDistance(a, a + shift), 5.0, 1e-6);
  // Scaled by 2: for N(0, I) vs N(0, 4I) the distance is d (1 + 4 - 2*2) = 6.
  EXPECT_NEAR(FrechetDistance(a, 2 * a), 6.0 * a.var(0).mean().item<double>(), 0.05);
}

TEST(ClassifierTest, ShapesAndSaveLoad) {
  torch::manual_seed(0);
  Classifier clf(1, 28, 10);
  clf->eval();
  const torch::Tensor x = torch::rand({3, 1, 28, 28}) * 2 - 1;
  EXPECT_EQ(clf->forward(x).sizes(), (std::vector<int64_t>{3, 10}));
  EXPECT_EQ(ExtractFeatures(clf, x).sizes(), (std::vector<int64_t>{3, 128}));
  const std::string dir = ::testing::TempDir() + "/classifier";
  ASSERT_TRUE(SaveClassifier(dir, clf, 0.5).ok());
  double acc = 0;
  auto loaded = LoadClassifier(dir, &acc);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(acc, 0.5);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(clf->forward(x), (*loaded)->forward(x)));
}

}  // namespace
}  // namespace dartserve::eval
