#include "model/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

namespace dartserve::model {

NoiseSchedule::NoiseSchedule(const ModelConfig& config)
    : num_steps_(config.num_steps),
      alpha_(config.num_steps + 1),
      cumulative_snr_(config.num_steps + 1, 0.0),
      weight_(config.num_steps + 1, 0.0) {
  const int T = num_steps_;
  const double s2 = config.snr_shift * config.snr_shift;
  alpha_[0] = 1.0;
  for (int t = 1; t < T; ++t) {
    const double c = std::cos(std::numbers::pi / 2 * t / T);
    const double a = c * c;
    const double shifted_snr = a / (1.0 - a) / s2;
    alpha_[t] = shifted_snr / (1.0 + shifted_snr);
  }
  alpha_[T] = 0.0;  // cos(pi/2) is not exactly 0 in floating point; x_T must be pure noise.

  double sum = 0.0;
  for (int t = T; t >= 1; --t) {
    sum += snr(t);
    cumulative_snr_[t] = sum;
  }

  for (int t = 1; t <= T; ++t) {
    switch (config.loss_weight) {
      case LossWeight::kUniform:
        weight_[t] = 1.0;
        break;
      case LossWeight::kPaperSum:
        weight_[t] = cumulative_snr_[t];
        break;
      case LossWeight::kClampedSnr:
        weight_[t] = std::clamp(cumulative_snr_[t], config.loss_weight_min, config.loss_weight_max);
        break;
    }
  }
  // Normalise so the weights sum to T: the loss scale then does not depend on the table chosen.
  double total = 0.0;
  for (int t = 1; t <= T; ++t) total += weight_[t];
  if (total > 0) {
    for (int t = 1; t <= T; ++t) weight_[t] *= T / total;
  }
}

double NoiseSchedule::snr(int t) const {
  const double a = alpha_[t];
  if (a >= 1.0) return std::numeric_limits<double>::infinity();
  return a / (1.0 - a);
}

}  // namespace dartserve::model
