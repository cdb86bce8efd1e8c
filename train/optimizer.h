// What every training run shares, whatever it trains (DART, the autoencoder): AdamW with linear
// warm-up and cosine decay, global-norm gradient clipping, an EMA of the weights (the weights
// that are served), and the training state on disk for exact resume.
//
// State folder (`out`/state, replaced atomically at each save; a crash between the renames leaves
// `out`/state.old, which Load accepts): config.json (the model's config), model.safetensors (raw
// weights), ema.safetensors, optimizer.safetensors (the moments, "m/<param>" and "v/<param>"),
// state.json ({"step": s}).
// Thread-compatibility: one thread at a time.
#ifndef DARTSERVE_TRAIN_OPTIMIZER_H_
#define DARTSERVE_TRAIN_OPTIMIZER_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "train/train_config.h"

namespace dartserve::train {

class AdamWEma {
 public:
  // `model` is trained and `ema` (the same architecture) holds the average; both must outlive
  // this. The EMA starts as a copy of the model's weights; the moments at zero.
  AdamWEma(torch::nn::Module& model, torch::nn::Module& ema, const TrainConfig& config);

  // Learning rate of `step` (0-based): linear warm-up, then cosine decay to min_lr.
  double LearningRate(int64_t step) const;
  // After backward(): clips the gradients, applies step `step`'s update and averages the new
  // weights into the EMA (over a shorter horizon early on, when the weights are poor).
  void Update(int64_t step);

  // Writes `out_dir`/state as described above, with `config_json` as its config.json.
  absl::Status Save(const std::string& out_dir, int64_t step, const std::string& config_json) const;
  // Restores `out_dir`/state (or state.old): the step it holds, or 0 when there is none (a fresh
  // run). FAILED_PRECONDITION, naming the folder, when the state is incomplete or misshapen, or
  // when `same_model` says its config.json describes another model.
  absl::StatusOr<int64_t> Load(const std::string& out_dir,
                               const std::function<bool(const std::string&)>& same_model);

 private:
  const TrainConfig config_;
  torch::nn::Module& model_;
  torch::nn::Module& ema_;
  std::vector<torch::Tensor> params_;
  std::vector<torch::Tensor> ema_params_;
  std::vector<torch::Tensor> adam_m_, adam_v_;
};

// Copies every parameter and buffer of `from` into `to` (the same architecture: the same names and
// shapes), for TrainConfig::init_from. With `grow`, `to` may hold more tensors than `from` (a
// deeper model, TrainConfig::init_grow); those keep their values. INVALID_ARGUMENT naming `what`
// and the first mismatch.
absl::Status CopyWeights(torch::nn::Module& from, torch::nn::Module& to, const std::string& what,
                         bool grow = false);

// TrainConfig::init_from: copies the weights of `source` (a model loaded from folder `dir`, or the
// error loading it) into `to` (CopyWeights, `grow` as there); errors name init_from.
template <typename ModuleHolder>
absl::Status InitWeightsFrom(absl::StatusOr<ModuleHolder> source, torch::nn::Module& to,
                             const std::string& dir, bool grow = false) {
  if (!source.ok()) {
    return absl::Status(source.status().code(),
                        absl::StrCat("init_from: ", source.status().message()));
  }
  return CopyWeights(**source, to, absl::StrCat("init_from ", dir), grow);
}

// One run of some model kind, as RunTraining drives it.
class TrainingRun {
 public:
  virtual ~TrainingRun() = default;
  virtual int64_t step() const = 0;
  // One optimiser step on the next batch; returns the loss before the update.
  virtual double TrainStep() = 0;
  virtual double LearningRate(int64_t step) const = 0;
  virtual absl::Status SaveCheckpoint() = 0;
  virtual absl::Status WriteSampleGrid() = 0;
};

// Trains until total_steps, `max_steps` more steps (-1: no limit) or `stop` becomes true,
// printing progress (loss, lr, images/s, ETA) every log_every steps, checkpointing and sampling on
// the config's cadences; always checkpoints at the end.
absl::Status RunTraining(TrainingRun& run, const TrainConfig& config, const std::atomic<bool>& stop,
                         int64_t max_steps);

}  // namespace dartserve::train

#endif  // DARTSERVE_TRAIN_OPTIMIZER_H_
