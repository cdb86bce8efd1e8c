// TrainConfig: what dartserve-train reads from its --config JSON: the model to build and how to
// train it. Unknown keys are rejected and each error names its field.
#ifndef DARTSERVE_TRAIN_TRAIN_CONFIG_H_
#define DARTSERVE_TRAIN_TRAIN_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "model/config.h"

namespace dartserve::train {

struct TrainConfig {
  model::ModelConfig model;
  // "fashion_mnist", "image_folder" (data_path) or "shapes" (data/shapes.h: the procedural
  // captioned scenes, dataset_size of them from `seed`, held-out combinations excluded).
  std::string dataset = "fashion_mnist";
  std::string data_path = data::kFashionMnistDir;
  int64_t dataset_size = 60000;  // "shapes" only

  int batch_size = 64;
  int64_t total_steps = 20000;
  double lr = 1e-3;  // peak, after linear warm-up; cosine decay to min_lr at total_steps
  double min_lr = 1e-5;
  int64_t warmup_steps = 500;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double adam_eps = 1e-8;
  double weight_decay = 0.0;  // decoupled (AdamW); matrices only
  double grad_clip = 1.0;     // max global gradient norm; 0 disables
  double ema_decay = 0.999;   // EMA of the weights: the weights that are served
  uint64_t seed = 0;

  int64_t log_every = 50;
  int64_t checkpoint_every = 500;
  int64_t sample_every = 2000;  // sample grid from the EMA weights; 0 disables

  absl::Status Validate() const;
};

absl::StatusOr<TrainConfig> TrainConfigFromJson(const std::string& json);
std::string TrainConfigToJson(const TrainConfig& config);

}  // namespace dartserve::train

#endif  // DARTSERVE_TRAIN_TRAIN_CONFIG_H_
