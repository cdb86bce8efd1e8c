#include "train/trainer.h"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_io.h"
#include "data/scenes64.h"
#include "data/shapes.h"
#include "model/checkpoint.h"
#include "model/image.h"
#include "model/loss.h"
#include "model/sampler.h"

namespace dartserve::train {

using ::dartserve::data::HoldOut;
using ::dartserve::data::InMemoryDataset;
using ::dartserve::data::LoadFashionMnist;
using ::dartserve::data::LoadImageFolder;
using ::dartserve::data::MakeShapesDataset;
using ::dartserve::data::ShapesDataset;

namespace fs = std::filesystem;
namespace dm = dartserve::model;

absl::StatusOr<InMemoryDataset> LoadTrainingData(const TrainConfig& config) {
  if (config.dataset == "fashion_mnist") return LoadFashionMnist("train", config.data_path);
  if (config.dataset == "image_folder") return LoadImageFolder(config.data_path);
  if (config.dataset == "scenes64") {
    data::Scenes64Dataset scenes = data::MakeScenes64Dataset(config.dataset_size, config.seed);
    return std::move(scenes.data);
  }
  if (config.dataset == "shapes") {
    ShapesDataset shapes = MakeShapesDataset(config.dataset_size, config.seed, HoldOut::kExclude);
    shapes.data.captions = std::move(shapes.captions);
    return std::move(shapes.data);
  }
  return absl::InvalidArgumentError(absl::StrCat("dataset: unknown \"", config.dataset, "\""));
}

namespace {

// The run's tokenizer: out_dir/tokenizer.model, trained from the captions on the first run.
absl::StatusOr<std::shared_ptr<const dm::Tokenizer>> RunTokenizer(
    const std::vector<std::string>& captions, int vocab_size, const std::string& out_dir) {
  const std::string path = (fs::path(out_dir) / dm::kTokenizerFile).string();
  if (!fs::exists(path)) {
    if (absl::Status s = dm::TrainTokenizer(captions, vocab_size, path); !s.ok()) return s;
  }
  absl::StatusOr<dm::Tokenizer> tokenizer = dm::Tokenizer::Load(path);
  if (!tokenizer.ok()) return tokenizer.status();
  if (tokenizer->vocab_size() > vocab_size) {
    return absl::FailedPreconditionError(absl::StrCat(path, " has ", tokenizer->vocab_size(),
                                                      " pieces, over model.text_vocab_size ",
                                                      vocab_size, " (use a new output folder)"));
  }
  return std::make_shared<const dm::Tokenizer>(*std::move(tokenizer));
}

// A latent model's autoencoder, loaded, checked (calibrated, fits `mc`) and frozen.
absl::StatusOr<dm::Autoencoder> LoadRunAutoencoder(const std::string& dir,
                                                   const dm::ModelConfig& mc) {
  absl::StatusOr<dm::Autoencoder> autoencoder = dm::LoadAutoencoder(dir);
  if (!autoencoder.ok()) {
    return absl::Status(autoencoder.status().code(),
                        absl::StrCat("model.autoencoder: ", autoencoder.status().message()));
  }
  // Uncalibrated latents are not unit-variance, which the noise schedule assumes (docs/model.md,
  // "Autoencoder"). An uncalibrated autoencoder is saved with the identity (shift 0, scale 1),
  // which a measurement never gives exactly; the autoencoder trainer's ema/ is always calibrated.
  const dm::AutoencoderConfig& ac = (*autoencoder)->config();
  if (ac.ResolvedShift() == std::vector<double>(ac.latent_channels, 0.0) &&
      ac.ResolvedScale() == std::vector<double>(ac.latent_channels, 1.0)) {
    return absl::FailedPreconditionError(
        absl::StrCat("model.autoencoder: ", dir,
                     " is not calibrated (latent_shift 0 and latent_scale 1: the identity)"));
  }
  if (absl::Status s = dm::CheckLatentGeometry(mc, (*autoencoder)->config()); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.autoencoder: ", dir, " does not fit the model: ", s.message()));
  }
  for (torch::Tensor& p : (*autoencoder)->parameters()) p.requires_grad_(false);
  (*autoencoder)->eval();
  return autoencoder;
}

// The run's autoencoder: out_dir/autoencoder, copied from the folder mc.autoencoder names on the
// first run and loaded from the copy ever after (the first run too, so every run of it reads the
// same bytes). That folder is typically another run's ema/, which moves on while this run trains;
// latents of a newer autoencoder would silently change the data under a resumed run.
absl::StatusOr<dm::Autoencoder> RunAutoencoder(const dm::ModelConfig& mc,
                                               const std::string& out_dir) {
  const std::string copy = (fs::path(out_dir) / dm::kCheckpointAutoencoder).string();
  if (!fs::exists(fs::path(copy) / dm::kConfigFile)) {
    // Checked before copying, so a wrong folder never becomes the run's autoencoder.
    absl::StatusOr<dm::Autoencoder> source = LoadRunAutoencoder(mc.autoencoder, mc);
    if (!source.ok()) return source.status();
    if (absl::Status s = dm::SaveAutoencoder(copy, *source); !s.ok()) return s;
  }
  return LoadRunAutoencoder(copy, mc);
}

// Sampler::GenerateBatch, but the final x_0 estimates unclamped, [N, C, H, W] in the model's
// geometry: Sampler::Image clamps to the pixel range [-1, 1], and a latent model's samples are
// unit-variance latents that must reach the decoder as they are.
absl::StatusOr<torch::Tensor> SampleImages(dm::Sampler& sampler,
                                           std::span<const dm::GenerateParams> params,
                                           size_t max_batch) {
  const dm::ModelConfig& c = sampler.config();
  std::vector<torch::Tensor> x0;
  for (size_t first = 0; first < params.size(); first += max_batch) {
    std::vector<std::unique_ptr<dm::GenerationState>> owned;
    std::vector<dm::GenerationState*> states;
    for (size_t i = first; i < std::min(params.size(), first + max_batch); ++i) {
      absl::StatusOr<std::unique_ptr<dm::GenerationState>> state = sampler.Start(params[i]);
      if (!state.ok()) return state.status();
      states.push_back(state->get());
      owned.push_back(*std::move(state));
    }
    while (!states.front()->finished()) {
      if (absl::Status s = sampler.Step(states); !s.ok()) return s;
    }
    for (const dm::GenerationState* state : states) x0.push_back(state->x0());
  }
  if (x0.empty()) return absl::InvalidArgumentError("no images to sample");
  torch::NoGradGuard no_grad;
  return dm::Unpatchify(torch::stack(x0), c.patch_size, c.channels, c.image_size);
}

}  // namespace

Trainer::Trainer(const TrainConfig& config, InMemoryDataset data, std::string out_dir)
    : config_(config),
      data_(std::move(data)),
      out_dir_(std::move(out_dir)),
      model_(nullptr),
      ema_(nullptr),
      schedule_(config.model) {}

Trainer::~Trainer() = default;

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainConfig& config,
                                                         InMemoryDataset data,
                                                         const std::string& out_dir) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const dm::ModelConfig& mc = config.model;
  if (data.size() == 0 || data.images.size(1) != mc.pixel_channels() ||
      data.images.size(2) != mc.pixel_size() || data.images.size(3) != mc.pixel_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset images do not match the model's ", mc.latent() ? "pixel size " : "image_size ",
        mc.pixel_size(), " and channels ", mc.pixel_channels()));
  }
  if (mc.conditioning == dm::Conditioning::kClass && data.num_classes > mc.num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.num_classes: the dataset has ", data.num_classes, " classes"));
  }
  const bool text = mc.conditioning == dm::Conditioning::kText;
  if (text && static_cast<int64_t>(data.captions.size()) != data.size()) {
    return absl::InvalidArgumentError("dataset: a text model needs one caption per image");
  }
  auto trainer = std::unique_ptr<Trainer>(new Trainer(config, std::move(data), out_dir));
  torch::manual_seed(config.seed);
  trainer->model_ = dm::Dart(mc);
  trainer->ema_ = dm::Dart(mc);
  trainer->model_->train();
  trainer->ema_->eval();
  trainer->optimizer_ = std::make_unique<AdamWEma>(*trainer->model_, *trainer->ema_, config);
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  if (mc.latent()) {
    absl::StatusOr<dm::Autoencoder> autoencoder = RunAutoencoder(mc, out_dir);
    if (!autoencoder.ok()) return autoencoder.status();
    trainer->autoencoder_ = *autoencoder;
    trainer->model_->set_autoencoder(*autoencoder);
    trainer->ema_->set_autoencoder(*autoencoder);  // so ema/ carries it
  }
  if (text) {
    absl::StatusOr<std::shared_ptr<const dm::Tokenizer>> tokenizer =
        RunTokenizer(trainer->data_.captions, mc.text_vocab_size, out_dir);
    if (!tokenizer.ok()) return tokenizer.status();
    trainer->model_->set_tokenizer(*tokenizer);
    trainer->ema_->set_tokenizer(*tokenizer);
    // Every caption tokenized once; a caption over text_max_tokens fails here, naming it.
    absl::StatusOr<dm::TextBatch> ids = trainer->model_->EncodePrompts(trainer->data_.captions);
    if (!ids.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("dataset captions: ", ids.status().message(), " (raise text_max_tokens)"));
    }
    trainer->captions_ = *std::move(ids);
  }
  absl::StatusOr<int64_t> step =
      trainer->optimizer_->Load(out_dir, [&mc](const std::string& saved) {
        absl::StatusOr<dm::ModelConfig> c = dm::ModelConfigFromJson(saved);
        return c.ok() && dm::ModelConfigToJson(*c) == dm::ModelConfigToJson(mc);
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

torch::Tensor Trainer::TrainingTargets(const torch::Tensor& images) {
  if (!autoencoder_) return images;
  // The posterior mean, not a sample: a deterministic function of the image, so exact resume
  // needs no extra random stream and an image's latent is the same at every epoch; it is also
  // what the calibration normalises to unit variance (MeasureLatentStats measures the means).
  // With a KL weight of 1e-6 the posterior's spread is tiny, so a sample would add little else.
  torch::NoGradGuard no_grad;
  return autoencoder_->Normalize(autoencoder_->Encode(images).mean);
}

double Trainer::TrainStep() {
  const BatchLoader::Item batch = loader_->Next(step_);
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(config_.seed, step_));
  const torch::Tensor x0 = TrainingTargets(batch.images);
  model_->zero_grad();
  const dm::DartLoss loss =
      captions_.tokens.defined()
          ? dm::ComputeDartLoss(model_, schedule_, x0,
                                dm::TextBatch{captions_.tokens.index_select(0, batch.indices),
                                              captions_.mask.index_select(0, batch.indices)},
                                gen)
          : dm::ComputeDartLoss(model_, schedule_, x0, batch.labels, gen);
  loss.loss.backward();
  optimizer_->Update(step_);
  ++step_;
  return loss.loss.item<double>();
}

absl::Status Trainer::SaveCheckpoint() {
  if (absl::Status s = optimizer_->Save(out_dir_, step_, dm::ModelConfigToJson(config_.model));
      !s.ok()) {
    return s;
  }
  return dm::SaveCheckpoint((fs::path(out_dir_) / "ema").string(), ema_);
}

absl::Status Trainer::WriteSampleGrid(int per_class) {
  dm::Sampler sampler(ema_);
  const bool cls = config_.model.conditioning == dm::Conditioning::kClass;
  const bool text = config_.model.conditioning == dm::Conditioning::kText;
  const int rows = cls    ? config_.model.num_classes
                   : text ? static_cast<int>(std::min<size_t>(8, data_.captions.size()))
                          : 1;
  std::vector<dm::GenerateParams> params;
  for (int c = 0; c < rows; ++c) {
    for (int i = 0; i < per_class; ++i) {
      params.push_back({.class_id = cls ? std::optional<int>(c) : std::nullopt,
                        .prompt = text ? data_.captions[c] : std::string(),
                        .seed = static_cast<uint64_t>(i)});
    }
  }
  absl::StatusOr<torch::Tensor> images = SampleImages(sampler, params, /*max_batch=*/128);
  if (!images.ok()) return images.status();
  if (autoencoder_) {  // the sampled latents, decoded to the pixels they stand for
    torch::NoGradGuard no_grad;
    *images = autoencoder_->Decode(autoencoder_->Denormalize(*images)).clamp(-1, 1);
  }
  const int scale = config_.model.pixel_size() >= 64 ? 1 : 2;  // small images: 2x for viewing
  absl::StatusOr<std::string> png =
      dm::ImageToPng(dm::UpscaleNearest(dm::MakeGrid(images->unbind(0), per_class), scale));
  if (!png.ok()) return png.status();
  const fs::path dir = fs::path(out_dir_) / "samples";
  fs::create_directories(dir);
  return WriteFileAtomically((dir / absl::StrFormat("step_%07d.png", step_)).string(), *png);
}

}  // namespace dartserve::train
