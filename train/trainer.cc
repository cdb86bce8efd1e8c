#include "train/trainer.h"

#include <filesystem>
#include <iostream>

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
  if (data.size() == 0 || data.images.size(1) != mc.channels ||
      data.images.size(2) != mc.image_size || data.images.size(3) != mc.image_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset images do not match the model's image_size ", mc.image_size,
                     " and channels ", mc.channels));
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

double Trainer::TrainStep() {
  const BatchLoader::Item batch = loader_->Next(step_);
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(config_.seed, step_));
  model_->zero_grad();
  const dm::DartLoss loss =
      captions_.tokens.defined()
          ? dm::ComputeDartLoss(model_, schedule_, batch.images,
                                dm::TextBatch{captions_.tokens.index_select(0, batch.indices),
                                              captions_.mask.index_select(0, batch.indices)},
                                gen)
          : dm::ComputeDartLoss(model_, schedule_, batch.images, batch.labels, gen);
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
  absl::StatusOr<torch::Tensor> images = sampler.GenerateBatch(params, /*max_batch=*/128);
  if (!images.ok()) return images.status();
  absl::StatusOr<std::string> png =
      dm::ImageToPng(dm::UpscaleNearest(dm::MakeGrid(images->unbind(0), per_class), 2));
  if (!png.ok()) return png.status();
  const fs::path dir = fs::path(out_dir_) / "samples";
  fs::create_directories(dir);
  return WriteFileAtomically((dir / absl::StrFormat("step_%07d.png", step_)).string(), *png);
}

}  // namespace dartserve::train
