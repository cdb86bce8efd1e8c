// The autoencoder trainer (a config whose "model" says "kind": "autoencoder"): the shared
// optimiser, EMA, state and exact resume of train/optimizer.h, and the autoencoder's loss
// (model/autoencoder.h: pixel L1 + L2 plus a small KL term) on batches of the config's dataset.
//
// Output folder layout:
//   train_config.json   the config this run was started with
//   state/              the training state (train/optimizer.h), replaced atomically
//   ema/                config.json + model.safetensors: the EMA weights, calibrated at every
//                       checkpoint (latent shift/scale and the latent-to-RGB preview map, measured
//                       on a fixed sample of the training images): what a latent DART config names
//   samples/            step_<s>.png: originals, reconstructions and latent previews of 8 images
// Thread-compatibility: one thread drives a trainer; its loader thread is internal.
#ifndef DARTSERVE_TRAIN_AUTOENCODER_TRAINER_H_
#define DARTSERVE_TRAIN_AUTOENCODER_TRAINER_H_

#include <torch/torch.h>

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "model/autoencoder.h"
#include "train/batch_loader.h"
#include "train/optimizer.h"
#include "train/train_config.h"

namespace dartserve::train {

class AutoencoderTrainer : public TrainingRun {
 public:
  // Images the calibration at each checkpoint measures (the first of a fixed permutation).
  static constexpr int64_t kCalibrationImages = 256;

  // `config.autoencoder` must be set; `data` must match its image size and channels. Resumes from
  // `out_dir`/state when it holds a checkpoint of the same model.
  static absl::StatusOr<std::unique_ptr<AutoencoderTrainer>> Create(const TrainConfig& config,
                                                                    data::InMemoryDataset data,
                                                                    const std::string& out_dir);
  ~AutoencoderTrainer() override;

  int64_t step() const override { return step_; }
  model::Autoencoder& model() { return model_; }
  model::Autoencoder& ema() { return ema_; }

  double TrainStep() override;
  double LearningRate(int64_t step) const override { return optimizer_->LearningRate(step); }
  // state/, then ema/ calibrated on the calibration images.
  absl::Status SaveCheckpoint() override;
  absl::Status WriteSampleGrid() override;

 private:
  AutoencoderTrainer(const TrainConfig& config, data::InMemoryDataset data, std::string out_dir);
  // The calibration images as batches of floats in [-1, 1].
  std::vector<torch::Tensor> CalibrationBatches() const;

  TrainConfig config_;
  data::InMemoryDataset data_;
  std::string out_dir_;
  model::Autoencoder model_{nullptr};
  model::Autoencoder ema_{nullptr};
  std::unique_ptr<AdamWEma> optimizer_;
  int64_t step_ = 0;
  std::unique_ptr<BatchLoader> loader_;
};

}  // namespace dartserve::train

#endif  // DARTSERVE_TRAIN_AUTOENCODER_TRAINER_H_
