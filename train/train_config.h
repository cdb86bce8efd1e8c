// TrainConfig: what dartserve-train reads from its --config JSON: the model to build and how to
// train it. Unknown keys are rejected and each error names its field.
#ifndef DARTSERVE_TRAIN_TRAIN_CONFIG_H_
#define DARTSERVE_TRAIN_TRAIN_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "model/autoencoder.h"
#include "model/config.h"

namespace dartserve::train {

struct TrainConfig {
  // The model to train: DART (`model`), or, when the config's "model" object says
  // "kind": "autoencoder", the autoencoder latent DART models denoise the latents of
  // (`autoencoder`; `model` is then unused).
  model::ModelConfig model;
  std::optional<model::AutoencoderConfig> autoencoder;
  // Autoencoder runs only: a trained autoencoder folder whose encoder (weights) and calibration
  // this run keeps, frozen, so only the decoder learns: a decoder of another width for the same
  // latents (AutoencoderConfig::decoder_base_width), usable with DART models trained on them.
  std::string frozen_encoder;
  // A checkpoint folder whose weights start a fresh run (resuming reads state/ instead): a DART
  // checkpoint (config.json + model.safetensors) for DART configs, an autoencoder folder for
  // autoencoder configs. Its architecture must be the config's; the optimiser starts afresh. How a
  // model is fine-tuned on new data, or trained on past a finished run whose state is gone.
  std::string init_from;
  // With init_from: the config's model may be deeper than the checkpoint's (model.depth only):
  // every checkpoint tensor must exist in the model with its shape, and the extra DART blocks keep
  // their fresh initialisation, which is the identity (adaLN gates and the cross-attention output
  // start at zero), so the grown model starts as the checkpoint's function and trains on.
  bool init_grow = false;
  // "fashion_mnist", "image_folder" (data_path), "shapes" (data/shapes.h: the procedural
  // captioned 32x32 scenes), "scenes64" (data/scenes64.h: the 64x64 world with relations and up
  // to three shapes) or "emoji" (data/emoji.h: the rasterised emoji folder at data_path, held-out
  // pairs excluded, captions_per_image captions each); the procedural ones make dataset_size
  // scenes from `seed`, held-out combinations excluded.
  std::string dataset = "fashion_mnist";
  std::string data_path = data::kFashionMnistDir;
  int64_t dataset_size = 60000;  // "shapes" and "scenes64" only
  int captions_per_image = 4;    // "emoji" only

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
