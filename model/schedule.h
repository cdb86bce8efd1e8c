// Noise schedule and loss-weight tables (docs/model.md, "Schedule and loss").
//
// DART's forward process is non-Markovian: every x_t is drawn independently from x_0,
//   x_t = sqrt(alpha_t) x_0 + sqrt(1 - alpha_t) eps_t,  t = 1..T,
// with alpha_0 = 1 and alpha_T = 0 exactly (x_T is pure noise, matching sampling from N(0, I)).
// Tables are plain doubles so they can be checked against the research notes without torch.
#ifndef DARTSERVE_MODEL_SCHEDULE_H_
#define DARTSERVE_MODEL_SCHEDULE_H_

#include <vector>

#include "model/config.h"

namespace dartserve::model {

class NoiseSchedule {
 public:
  // Builds the tables for `config` (cosine alpha_t = cos^2(pi/2 t/T), SNR shift applied as
  // SNR / s^2, loss weights per config.loss_weight). `config` must be valid.
  explicit NoiseSchedule(const ModelConfig& config);

  int num_steps() const { return num_steps_; }
  // alpha_t for t in [0, T]: cumulative signal variance.
  double alpha(int t) const { return alpha_[t]; }
  // SNR_t = alpha_t / (1 - alpha_t); +inf at t = 0, 0 at t = T.
  double snr(int t) const;
  // Effective SNR of the observation x_{t:T}: sum over tau in [t, T] of SNR_tau.
  double cumulative_snr(int t) const { return cumulative_snr_[t]; }
  // Loss weight of the block holding x_t, t in [1, T].
  double weight(int t) const { return weight_[t]; }

 private:
  int num_steps_;
  std::vector<double> alpha_;           // [T + 1]
  std::vector<double> cumulative_snr_;  // [T + 1]; index 0 unused
  std::vector<double> weight_;          // [T + 1]; index 0 unused
};

// Sequence block index of x_t: block 0 holds x_T, block T - 1 holds x_1.
inline int BlockOfStep(int t, int num_steps) { return num_steps - t; }
inline int StepOfBlock(int block, int num_steps) { return num_steps - block; }

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_SCHEDULE_H_
