// The DART trainer: the shared optimiser, EMA and state (train/optimizer.h), background batch
// loading (train/batch_loader.h), periodic checkpoints with exact resume, sample grids.
//
// Exact resume without serialising RNG streams: every random choice is a pure function of
// (seed, step) — the data order of each epoch and each step's noise and dropout come from
// generators seeded from them — so the saved state is just the weights, the EMA weights, the
// optimiser moments and the step. Resuming at step s then reproduces step s bit for bit.
//
// Output folder layout:
//   train_config.json   the config this run was started with
//   state/              the training state (train/optimizer.h), replaced atomically
//   ema/                config.json + model.safetensors: the EMA weights, servable as they are
//   samples/            step_<s>.png grids from the EMA weights
//   tokenizer.model     text models: the SentencePiece model, trained from the dataset's captions
//                       on the first run (model.text_vocab_size pieces at most) and reused on
//                       resume; ema/ holds a copy, so it stays servable
//   latents.safetensors latent models: every training image's latent, encoded on the first run
//                       and read back on resume (re-encoded when the dataset changes)
//   autoencoder/        latent models (docs/model.md, "Latent DART"): the autoencoder, copied from
//                       the folder model.autoencoder names on the first run and used from then on;
//                       ema/autoencoder/ holds a copy, so ema/ stays servable
//
// Latent models train on the autoencoder's normalized posterior means (every image encoded once,
// when the trainer is created) and decode their sample grids with it; the autoencoder is frozen.
// Thread-compatibility: one thread drives a Trainer; its loader thread is internal.
#ifndef DARTSERVE_TRAIN_TRAINER_H_
#define DARTSERVE_TRAIN_TRAINER_H_

#include <torch/torch.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "model/dart.h"
#include "model/schedule.h"
#include "train/batch_loader.h"
#include "train/optimizer.h"
#include "train/train_config.h"

namespace dartserve::train {

// The training data a config names: Fashion-MNIST's train split, an image folder, or the
// procedural captioned shapes (dataset_size scenes from the config's seed, held-out combinations
// excluded).
absl::StatusOr<data::InMemoryDataset> LoadTrainingData(const TrainConfig& config);

// For each of `images` ([N, ...] uint8) the first row holding the same bytes: [N] int64.
torch::Tensor DistinctImageRows(const torch::Tensor& images);

// A latent run's cache of its dataset's latents, in the run folder.
inline constexpr char kLatentCacheFile[] = "latents.safetensors";

class Trainer : public TrainingRun {
 public:
  // Builds the model and, when `out_dir`/state holds a checkpoint, resumes from it (its config must
  // build the same model). `data` must match the model's image size and channels (for a latent
  // model its pixel_size() and pixel_channels()), and have captions for a text model. A latent
  // model's autoencoder must load, be calibrated (a latent shift and scale other than the
  // identity) and fit the config (model::CheckLatentGeometry); else an error naming the folder.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const TrainConfig& config,
                                                         data::InMemoryDataset data,
                                                         const std::string& out_dir);
  ~Trainer() override;

  int64_t step() const override { return step_; }
  const TrainConfig& config() const { return config_; }
  model::Dart& model() { return model_; }
  model::Dart& ema() { return ema_; }

  // One optimiser step on the next batch; returns the loss before the update.
  double TrainStep() override;
  // Learning rate at `step` (warm-up then cosine).
  double LearningRate(int64_t step) const override { return optimizer_->LearningRate(step); }

  // Writes state/ and ema/ atomically.
  absl::Status SaveCheckpoint() override;
  // Writes samples/step_<s>.png: 8 images per class from the EMA weights (text models: one row
  // per each of the first 8 captions).
  absl::Status WriteSampleGrid() override { return WriteSampleGrid(8); }
  absl::Status WriteSampleGrid(int per_class);

  // RunTraining on this trainer.
  absl::Status Run(const std::atomic<bool>& stop, int64_t max_steps = -1) {
    return RunTraining(*this, config_, stop, max_steps);
  }

 private:
  Trainer(const TrainConfig& config, data::InMemoryDataset data, std::string out_dir);
  // Latent models: every training image's latent into latents_, read from out_dir's
  // kLatentCacheFile when it was made from the same dataset, else encoded (progress on stderr)
  // and written there.
  void EncodeDataset();
  // What DART learns to denoise: the batch's images, or for a latent model their latents.
  torch::Tensor TrainingTargets(const BatchLoader::Item& batch) const;

  TrainConfig config_;
  data::InMemoryDataset data_;
  std::string out_dir_;
  model::Dart model_;
  model::Dart ema_;
  model::NoiseSchedule schedule_;
  std::unique_ptr<AdamWEma> optimizer_;
  model::TextBatch captions_;  // text models: every caption's ids, padded to text_max_tokens
  model::Autoencoder autoencoder_{nullptr};  // latent models: frozen, eval mode
  torch::Tensor latents_;  // latent models: [N, c, h, w], every image's normalized latent
  int64_t step_ = 0;
  std::unique_ptr<BatchLoader> loader_;
};

}  // namespace dartserve::train

#endif  // DARTSERVE_TRAIN_TRAINER_H_
