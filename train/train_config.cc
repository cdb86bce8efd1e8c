#include "train/train_config.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace dartserve::train {
namespace {

using Json = nlohmann::json;

template <typename T>
absl::Status Get(const Json& value, const std::string& key, T* out) {
  try {
    *out = value.get<T>();
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": wrong type"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status TrainConfig::Validate() const {
  if (absl::Status s = autoencoder ? autoencoder->Validate() : model.Validate(); !s.ok()) return s;
  // An autoencoder learns images alone, from any dataset; DART's conditioning must match its data.
  const bool text_matches_data =
      autoencoder.has_value() ||
      (dataset == "shapes" || dataset == "scenes64" || dataset == "emoji") ==
          (model.conditioning == model::Conditioning::kText);
  const auto check = [](bool ok, const char* what) {
    return ok ? absl::OkStatus() : absl::InvalidArgumentError(what);
  };
  for (const absl::Status& s : {
           check(dataset == "fashion_mnist" || dataset == "image_folder" || dataset == "shapes" ||
                     dataset == "scenes64" || dataset == "emoji",
                 "dataset: must be \"fashion_mnist\", \"image_folder\", \"shapes\", "
                 "\"scenes64\" or \"emoji\""),
           check(captions_per_image >= 1 && captions_per_image <= 64,
                 "captions_per_image: must be in [1, 64]"),
           check(dataset_size >= 1 && dataset_size <= 10'000'000,
                 "dataset_size: must be in [1, 10^7]"),
           check(text_matches_data,
                 "dataset: text conditioning needs captions (\"shapes\", \"scenes64\", "
                 "\"emoji\"), and "
                 "captioned data a text model"),
           check(batch_size >= 1 && batch_size <= 65536, "batch_size: must be in [1, 65536]"),
           check(total_steps >= 1, "total_steps: must be >= 1"),
           check(frozen_encoder.empty() || autoencoder.has_value(),
                 "frozen_encoder: only for autoencoder configs"),
           check(!init_grow || (!init_from.empty() && !autoencoder.has_value()),
                 "init_grow: needs init_from, and only for DART configs"),
           check(lr > 0 && lr < 1, "lr: must be in (0, 1)"),
           check(min_lr >= 0 && min_lr <= lr, "min_lr: must be in [0, lr]"),
           check(warmup_steps >= 0, "warmup_steps: must be >= 0"),
           check(beta1 >= 0 && beta1 < 1, "beta1: must be in [0, 1)"),
           check(beta2 >= 0 && beta2 < 1, "beta2: must be in [0, 1)"),
           check(adam_eps > 0, "adam_eps: must be > 0"),
           check(weight_decay >= 0, "weight_decay: must be >= 0"),
           check(grad_clip >= 0, "grad_clip: must be >= 0"),
           check(ema_decay >= 0 && ema_decay < 1, "ema_decay: must be in [0, 1)"),
           check(log_every >= 1, "log_every: must be >= 1"),
           check(checkpoint_every >= 1, "checkpoint_every: must be >= 1"),
           check(sample_every >= 0, "sample_every: must be >= 0"),
       }) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainConfig> TrainConfigFromJson(const std::string& text) {
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("train config: not a JSON object");
  }
  TrainConfig c;
  for (const auto& [key, value] : j.items()) {
    absl::Status s;
    if (key == "model" && value.is_object() && value.contains("kind")) {
      absl::StatusOr<model::AutoencoderConfig> a = model::AutoencoderConfigFromJson(value.dump());
      if (!a.ok()) return absl::InvalidArgumentError(absl::StrCat("model.", a.status().message()));
      c.autoencoder = *a;
    } else if (key == "model") {
      absl::StatusOr<model::ModelConfig> m = model::ModelConfigFromJson(value.dump());
      if (!m.ok()) return absl::InvalidArgumentError(absl::StrCat("model.", m.status().message()));
      c.model = *m;
    } else if (key == "dataset")
      s = Get(value, key, &c.dataset);
    else if (key == "data_path")
      s = Get(value, key, &c.data_path);
    else if (key == "frozen_encoder")
      s = Get(value, key, &c.frozen_encoder);
    else if (key == "init_from")
      s = Get(value, key, &c.init_from);
    else if (key == "init_grow")
      s = Get(value, key, &c.init_grow);
    else if (key == "captions_per_image")
      s = Get(value, key, &c.captions_per_image);
    else if (key == "dataset_size")
      s = Get(value, key, &c.dataset_size);
    else if (key == "batch_size")
      s = Get(value, key, &c.batch_size);
    else if (key == "total_steps")
      s = Get(value, key, &c.total_steps);
    else if (key == "lr")
      s = Get(value, key, &c.lr);
    else if (key == "min_lr")
      s = Get(value, key, &c.min_lr);
    else if (key == "warmup_steps")
      s = Get(value, key, &c.warmup_steps);
    else if (key == "beta1")
      s = Get(value, key, &c.beta1);
    else if (key == "beta2")
      s = Get(value, key, &c.beta2);
    else if (key == "adam_eps")
      s = Get(value, key, &c.adam_eps);
    else if (key == "weight_decay")
      s = Get(value, key, &c.weight_decay);
    else if (key == "grad_clip")
      s = Get(value, key, &c.grad_clip);
    else if (key == "ema_decay")
      s = Get(value, key, &c.ema_decay);
    else if (key == "seed")
      s = Get(value, key, &c.seed);
    else if (key == "log_every")
      s = Get(value, key, &c.log_every);
    else if (key == "checkpoint_every")
      s = Get(value, key, &c.checkpoint_every);
    else if (key == "sample_every")
      s = Get(value, key, &c.sample_every);
    else
      s = absl::InvalidArgumentError(absl::StrCat(key, ": unknown train config field"));
    if (!s.ok()) return s;
  }
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  return c;
}

std::string TrainConfigToJson(const TrainConfig& c) {
  Json j = {{"model", Json::parse(c.autoencoder ? model::AutoencoderConfigToJson(*c.autoencoder)
                                                : model::ModelConfigToJson(c.model))},
            {"dataset", c.dataset},
            {"data_path", c.data_path},
            {"dataset_size", c.dataset_size},
            {"batch_size", c.batch_size},
            {"total_steps", c.total_steps},
            {"lr", c.lr},
            {"min_lr", c.min_lr},
            {"warmup_steps", c.warmup_steps},
            {"beta1", c.beta1},
            {"beta2", c.beta2},
            {"adam_eps", c.adam_eps},
            {"weight_decay", c.weight_decay},
            {"grad_clip", c.grad_clip},
            {"ema_decay", c.ema_decay},
            {"seed", c.seed},
            {"log_every", c.log_every},
            {"checkpoint_every", c.checkpoint_every},
            {"sample_every", c.sample_every}};
  if (!c.frozen_encoder.empty()) j["frozen_encoder"] = c.frozen_encoder;
  if (!c.init_from.empty()) j["init_from"] = c.init_from;
  if (c.init_grow) j["init_grow"] = true;
  if (c.dataset == "emoji") j["captions_per_image"] = c.captions_per_image;
  return j.dump(2) + "\n";
}

}  // namespace dartserve::train
