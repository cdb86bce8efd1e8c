#include "train/trainer.h"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <string_view>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/file_io.h"
#include "data/emoji.h"
#include "data/scenes64.h"
#include "data/shapes.h"
#include "model/checkpoint.h"
#include "model/image.h"
#include "model/loss.h"
#include "model/safetensors.h"
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
  if (config.dataset == "emoji") {
    absl::StatusOr<data::EmojiDataset> emoji = data::LoadEmojiDataset(
        config.data_path, data::EmojiSplit::kTrain, config.captions_per_image, config.seed);
    if (!emoji.ok()) return emoji.status();
    return std::move(emoji->data);
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
  if (!config.init_from.empty()) {
    absl::StatusOr<dm::Dart> source = dm::LoadCheckpoint(config.init_from);
    if (source.ok() && config.init_grow) {
      dm::ModelConfig grown = (*source)->config();
      if (grown.depth > mc.depth) {
        return absl::InvalidArgumentError(absl::StrCat("init_grow: init_from ", config.init_from,
                                                       " is deeper (", grown.depth,
                                                       ") than model"));
      }
      grown.depth = mc.depth;
      grown.autoencoder = mc.autoencoder;  // the checkpoint names its own subfolder
      if (dm::ModelConfigToJson(grown) != dm::ModelConfigToJson(mc)) {
        return absl::InvalidArgumentError(
            absl::StrCat("init_grow: model may differ from init_from ", config.init_from,
                         "'s config.json in depth only"));
      }
    }
    if (absl::Status s = InitWeightsFrom(std::move(source), *trainer->model_, config.init_from,
                                         config.init_grow);
        !s.ok()) {
      return s;
    }
    // The weights' token ids mean the pieces of their own tokenizer: the run keeps it.
    const fs::path tokenizer = fs::path(config.init_from) / dm::kTokenizerFile;
    const fs::path run_tokenizer = fs::path(out_dir) / dm::kTokenizerFile;
    if (fs::exists(tokenizer) && !fs::exists(run_tokenizer)) {
      std::error_code ec;
      fs::create_directories(out_dir, ec);
      fs::copy_file(tokenizer, run_tokenizer, ec);
      if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot copy ", tokenizer.string()));
    }
  }
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
  if (trainer->autoencoder_) trainer->EncodeDataset();
  trainer->loader_ =
      std::make_unique<BatchLoader>(trainer->data_, config.batch_size, config.seed, trainer->step_);
  return trainer;
}

torch::Tensor DistinctImageRows(const torch::Tensor& images) {
  const torch::Tensor bytes = images.contiguous();
  const int64_t n = bytes.size(0);
  const int64_t row_bytes = n > 0 ? bytes.numel() / n : 0;
  const auto* data = static_cast<const char*>(bytes.data_ptr());
  std::unordered_map<std::string_view, int64_t> first_of;
  std::vector<int64_t> out(n);
  for (int64_t i = 0; i < n; ++i) {
    // The map compares whole rows, so two images that only share a hash stay apart.
    out[i] = first_of.emplace(std::string_view(data + i * row_bytes, row_bytes), i).first->second;
  }
  return torch::tensor(out, torch::kLong);
}

void Trainer::EncodeDataset() {
  // The posterior mean, not a sample: a deterministic function of the image, so exact resume
  // needs no extra random stream and an image's latent is the same at every epoch; it is also
  // what the calibration normalises to unit variance (MeasureLatentStats measures the means).
  // With a KL weight of 1e-6 the posterior's spread is tiny, so a sample would add little else.
  // Encoding once instead of per batch halves a 64x64 run's step time (the encoder costs about
  // as much as DART's forward and backward); fixed chunks keep every latent bit-identical
  // whether it was encoded in this process or read back from the cache.
  const fs::path cache = fs::path(out_dir_) / kLatentCacheFile;
  const std::map<std::string, std::string> stamp = {{"dataset", config_.dataset},
                                                    {"dataset_size", std::to_string(data_.size())},
                                                    {"seed", std::to_string(config_.seed)}};
  if (absl::StatusOr<dm::SafetensorsFile> file = dm::SafetensorsFile::Read(cache.string());
      file.ok() && file->metadata() == stamp && file->tensors().contains("latents")) {
    const dm::TensorInfo& info = file->tensors().at("latents");
    if (!info.shape.empty() && info.shape[0] == data_.size()) {
      latents_ = dm::TensorFromBytes(info, file->Data(info)).clone();
      std::cerr << "dartserve-train: read the dataset's latents from " << cache.string() << "\n";
      return;
    }
  }
  constexpr int64_t kChunk = 256;
  torch::NoGradGuard no_grad;
  // Rows that repeat an earlier row's image (several captions per image) share its latent, so
  // each distinct image is encoded once.
  const torch::Tensor row_image = DistinctImageRows(data_.images);  // [N]: a row's distinct image
  const torch::Tensor distinct = std::get<0>(torch::_unique(row_image, /*sorted=*/true));
  const int64_t n = distinct.size(0);
  std::vector<torch::Tensor> chunks;
  const absl::Time start = absl::Now();
  for (int64_t first = 0; first < n; first += kChunk) {
    const torch::Tensor indices = distinct.slice(0, first, std::min(n, first + kChunk));
    const torch::Tensor images = data_.Batch(indices).first;
    chunks.push_back(autoencoder_->Normalize(autoencoder_->Encode(images).mean));
    const int64_t done = first + indices.size(0);
    if (chunks.size() % 20 == 0 || done == n) {
      std::cerr << absl::StrFormat("encoding the dataset: %d/%d images, %.1f img/s\n", done, n,
                                   done / absl::ToDoubleSeconds(absl::Now() - start));
    }
  }
  // Row i's latent is that of its distinct image, whose position in `distinct` searchsorted finds.
  latents_ = torch::cat(chunks).index_select(0, torch::searchsorted(distinct, row_image));
  // A cache, so a resumed run starts at once; a failure to write it only costs that.
  absl::StatusOr<std::string> bytes =
      dm::SerializeSafetensors({dm::TensorToBytes("latents", latents_, dm::DType::kF32)}, stamp);
  if (!bytes.ok() || !WriteFileAtomically(cache.string(), *bytes).ok()) {
    std::cerr << "dartserve-train: could not write " << cache.string() << "\n";
  }
}

torch::Tensor Trainer::TrainingTargets(const BatchLoader::Item& batch) const {
  if (!latents_.defined()) return batch.images;
  return latents_.index_select(0, batch.indices);
}

double Trainer::TrainStep() {
  const BatchLoader::Item batch = loader_->Next(step_);
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(config_.seed, step_));
  const torch::Tensor x0 = TrainingTargets(batch);
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
  // Latent models: decoded to the pixels their latents stand for.
  absl::StatusOr<torch::Tensor> images = sampler.GenerateBatch(params, /*max_batch=*/128);
  if (!images.ok()) return images.status();
  const int scale = config_.model.pixel_size() >= 64 ? 1 : 2;  // small images: 2x for viewing
  absl::StatusOr<std::string> png =
      dm::ImageToPng(dm::UpscaleNearest(dm::MakeGrid(images->unbind(0), per_class), scale));
  if (!png.ok()) return png.status();
  const fs::path dir = fs::path(out_dir_) / "samples";
  fs::create_directories(dir);
  return WriteFileAtomically((dir / absl::StrFormat("step_%07d.png", step_)).string(), *png);
}

}  // namespace dartserve::train
