#include "model/schedule.h"

#include <gtest/gtest.h>

#include <cmath>

namespace dartserve::model {
namespace {

// docs/model.md, "Schedule and loss": cosine schedule, T = 16, no shift.
struct Row {
  int t;
  double alpha, snr, cumulative;
};
constexpr Row kTable[] = {
    {1, 0.990393, 103.0869, 155.0000}, {2, 0.961940, 25.2741, 51.9131},
    {3, 0.915735, 10.8673, 26.6390},   {4, 0.853553, 5.8284, 15.7717},
    {5, 0.777785, 3.5001, 9.9433},     {6, 0.691342, 2.2398, 6.4431},
    {7, 0.597545, 1.4848, 4.2033},     {8, 0.500000, 1.0000, 2.7185},
    {9, 0.402455, 0.6735, 1.7185},     {10, 0.308658, 0.4465, 1.0450},
    {11, 0.222215, 0.2857, 0.5986},    {12, 0.146447, 0.1716, 0.3129},
    {13, 0.084265, 0.0920, 0.1413},    {14, 0.038060, 0.0396, 0.0493},
    {15, 0.009607, 0.0097, 0.0097},    {16, 0.000000, 0.0000, 0.0000},
};

ModelConfig T16() {
  ModelConfig c;
  c.num_steps = 16;
  return c;
}

TEST(NoiseScheduleTest, ReproducesCosineTableT16) {
  const NoiseSchedule s(T16());
  EXPECT_EQ(s.alpha(0), 1.0);
  EXPECT_TRUE(std::isinf(s.snr(0)));
  for (const Row& r : kTable) {
    EXPECT_NEAR(s.alpha(r.t), r.alpha, 1e-6) << "t=" << r.t;
    EXPECT_NEAR(s.snr(r.t), r.snr, 1e-4 * std::max(1.0, r.snr)) << "t=" << r.t;
    EXPECT_NEAR(s.cumulative_snr(r.t), r.cumulative, 1e-4 * std::max(1.0, r.cumulative))
        << "t=" << r.t;
  }
  EXPECT_EQ(s.alpha(16), 0.0);  // exactly: x_T is pure noise
}

TEST(NoiseScheduleTest, ClampedWeightsAreFlooredAndNormalised) {
  const NoiseSchedule s(T16());
  double sum = 0;
  for (int t = 1; t <= 16; ++t) sum += s.weight(t);
  EXPECT_NEAR(sum, 16.0, 1e-9);
  // Before normalisation: t <= 4 clamp to 5, t = 16 floors at 0.1, t = 10 keeps 1.0450.
  const double scale = s.weight(1) / 5.0;
  EXPECT_NEAR(s.weight(4), 5.0 * scale, 1e-12);
  EXPECT_NEAR(s.weight(16), 0.1 * scale, 1e-12);
  EXPECT_NEAR(s.weight(10), 1.0450 * scale, 1e-4 * scale);
  EXPECT_GT(s.weight(16), 0.0);  // block x_T gets gradient
}

TEST(NoiseScheduleTest, UniformAndPaperSumWeights) {
  ModelConfig c = T16();
  c.loss_weight = LossWeight::kUniform;
  const NoiseSchedule u(c);
  for (int t = 1; t <= 16; ++t) EXPECT_DOUBLE_EQ(u.weight(t), 1.0);
  c.loss_weight = LossWeight::kPaperSum;
  const NoiseSchedule p(c);
  EXPECT_EQ(p.weight(16), 0.0);  // the known pitfall of the paper-sum table
  EXPECT_NEAR(p.weight(1) / p.weight(8), 155.0 / 2.7185, 1e-3);
}

TEST(NoiseScheduleTest, SnrShiftDividesSnr) {
  ModelConfig c = T16();
  c.snr_shift = 2.0;
  const NoiseSchedule shifted(c);
  const NoiseSchedule plain(T16());
  for (int t = 1; t < 16; ++t) {
    EXPECT_NEAR(shifted.snr(t), plain.snr(t) / 4.0, 1e-9 * plain.snr(t)) << "t=" << t;
  }
  EXPECT_EQ(shifted.alpha(16), 0.0);
}

}  // namespace
}  // namespace dartserve::model
