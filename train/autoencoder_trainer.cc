#include "train/autoencoder_trainer.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_io.h"
#include "model/image.h"

namespace dartserve::train {
namespace {

namespace fs = std::filesystem;
namespace dm = dartserve::model;

// Copies the encoder weights and the calibration of the autoencoder in `dir` into `model` and
// freezes the encoder (its parameters get no gradients, so the optimiser leaves them alone).
absl::Status FreezeEncoder(const std::string& dir, dm::Autoencoder& model) {
  absl::StatusOr<dm::Autoencoder> source = dm::LoadAutoencoder(dir);
  if (!source.ok()) {
    return absl::Status(source.status().code(),
                        absl::StrCat("frozen_encoder: ", source.status().message()));
  }
  const dm::AutoencoderConfig& from = (*source)->config();
  if (!from.SameEncoder(model->config())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frozen_encoder: ", dir,
        " has another encoder (image_size, channels, latent_channels, "
        "base_width, width_mults, num_res_blocks and norm_groups must match the model's)"));
  }
  if (from.latent_shift.empty() || from.preview_weight.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("frozen_encoder: ", dir, " is not calibrated"));
  }
  torch::NoGradGuard no_grad;
  const auto src = (*source)->encoder()->named_parameters();
  for (auto& p : model->encoder()->named_parameters()) {
    p.value().copy_(src[p.key()]);
    p.value().set_requires_grad(false);
  }
  if (absl::Status s = model->SetLatentStats(from.latent_shift, from.latent_scale); !s.ok()) {
    return s;
  }
  return model->SetPreviewMap({from.preview_weight, from.preview_bias});
}

}  // namespace

AutoencoderTrainer::AutoencoderTrainer(const TrainConfig& config, data::InMemoryDataset data,
                                       std::string out_dir)
    : config_(config), data_(std::move(data)), out_dir_(std::move(out_dir)) {}

AutoencoderTrainer::~AutoencoderTrainer() = default;

absl::StatusOr<std::unique_ptr<AutoencoderTrainer>> AutoencoderTrainer::Create(
    const TrainConfig& config, data::InMemoryDataset data, const std::string& out_dir) {
  if (!config.autoencoder.has_value()) {
    return absl::InvalidArgumentError("model: not an autoencoder config");
  }
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const dm::AutoencoderConfig& ac = *config.autoencoder;
  if (data.size() == 0 || data.images.size(1) != ac.channels ||
      data.images.size(2) != ac.image_size || data.images.size(3) != ac.image_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset images do not match the autoencoder's image_size ", ac.image_size,
                     " and channels ", ac.channels));
  }
  auto trainer =
      std::unique_ptr<AutoencoderTrainer>(new AutoencoderTrainer(config, std::move(data), out_dir));
  torch::manual_seed(config.seed);
  trainer->model_ = dm::Autoencoder(ac);
  if (!config.frozen_encoder.empty()) {
    if (absl::Status s = FreezeEncoder(config.frozen_encoder, trainer->model_); !s.ok()) return s;
  }
  if (!config.init_from.empty()) {
    if (absl::Status s = InitWeightsFrom(dm::LoadAutoencoder(config.init_from), *trainer->model_,
                                         config.init_from);
        !s.ok()) {
      return s;
    }
  }
  trainer->ema_ = dm::Autoencoder(trainer->model_->config());  // with the calibration, if any
  trainer->model_->train();
  trainer->ema_->eval();
  trainer->optimizer_ = std::make_unique<AdamWEma>(*trainer->model_, *trainer->ema_, config);
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  }
  // Calibration lives in the config but is not part of what makes two models the same.
  absl::StatusOr<int64_t> step = trainer->optimizer_->Load(out_dir, [&ac](const std::string& j) {
    absl::StatusOr<dm::AutoencoderConfig> saved = dm::AutoencoderConfigFromJson(j);
    if (!saved.ok()) return false;
    saved->latent_shift = ac.latent_shift;
    saved->latent_scale = ac.latent_scale;
    saved->preview_weight = ac.preview_weight;
    saved->preview_bias = ac.preview_bias;
    return dm::AutoencoderConfigToJson(*saved) == dm::AutoencoderConfigToJson(ac);
  });
  if (!step.ok()) return step.status();
  trainer->step_ = *step;
  if (absl::Status s = WriteFileAtomically((fs::path(out_dir) / "train_config.json").string(),
                                           TrainConfigToJson(config));
      !s.ok()) {
    return s;
  }
  trainer->loader_ =
      std::make_unique<BatchLoader>(trainer->data_, config.batch_size, config.seed, trainer->step_);
  return trainer;
}

double AutoencoderTrainer::TrainStep() {
  const BatchLoader::Item batch = loader_->Next(step_);
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(config_.seed, step_));
  model_->zero_grad();
  const dm::AutoencoderLoss loss = dm::ComputeAutoencoderLoss(model_, batch.images, gen);
  loss.loss.backward();
  optimizer_->Update(step_);
  ++step_;
  return loss.loss.item<double>();
}

std::vector<torch::Tensor> AutoencoderTrainer::CalibrationBatches() const {
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(config_.seed, 0xca1b));
  const int64_t n = std::min(kCalibrationImages, data_.size());
  const torch::Tensor order = torch::randperm(data_.size(), gen, torch::kLong).slice(0, 0, n);
  std::vector<torch::Tensor> batches;
  for (int64_t i = 0; i < n; i += 128) {
    batches.push_back(data_.Batch(order.slice(0, i, std::min(n, i + 128))).first);
  }
  return batches;
}

absl::Status AutoencoderTrainer::SaveCheckpoint() {
  // The state's config is the uncalibrated one the run was started with.
  if (absl::Status s =
          optimizer_->Save(out_dir_, step_, dm::AutoencoderConfigToJson(*config_.autoencoder));
      !s.ok()) {
    return s;
  }
  // A frozen encoder keeps the calibration it came with (its latents do not change), so DART
  // models trained on them stay valid with this decoder.
  if (config_.frozen_encoder.empty()) {
    const std::vector<torch::Tensor> batches = CalibrationBatches();
    if (absl::Status s = dm::MeasureLatentStats(ema_, batches); !s.ok()) return s;
    if (absl::Status s = dm::FitModelPreviewMap(ema_, batches); !s.ok()) return s;
  }
  return dm::SaveAutoencoder((fs::path(out_dir_) / "ema").string(), ema_);
}

absl::Status AutoencoderTrainer::WriteSampleGrid() {
  torch::NoGradGuard no_grad;
  const torch::Tensor images = CalibrationBatches().front().slice(0, 0, 8);
  const dm::Posterior posterior = ema_->Encode(images);
  const torch::Tensor recon = ema_->Decode(posterior.mean).clamp(-1, 1);
  const torch::Tensor preview = ema_->PreviewImage(ema_->Normalize(posterior.mean)).clamp(-1, 1);
  std::vector<torch::Tensor> cells;
  for (const torch::Tensor& row : {images, recon, preview}) {
    for (const torch::Tensor& image : row.unbind(0)) cells.push_back(image);
  }
  absl::StatusOr<std::string> png =
      dm::ImageToPng(dm::UpscaleNearest(dm::MakeGrid(cells, images.size(0)), 2));
  if (!png.ok()) return png.status();
  const fs::path dir = fs::path(out_dir_) / "samples";
  fs::create_directories(dir);
  return WriteFileAtomically((dir / absl::StrFormat("step_%07d.png", step_)).string(), *png);
}

}  // namespace dartserve::train
