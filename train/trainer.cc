#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <numbers>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_io.h"
#include "data/shapes.h"
#include "model/checkpoint.h"
#include "model/image.h"
#include "model/loss.h"
#include "model/sampler.h"
#include "nlohmann/json.hpp"

namespace dartserve::train {

using ::dartserve::data::HoldOut;
using ::dartserve::data::InMemoryDataset;
using ::dartserve::data::LoadFashionMnist;
using ::dartserve::data::LoadImageFolder;
using ::dartserve::data::MakeShapesDataset;
using ::dartserve::data::ShapesDataset;

namespace fs = std::filesystem;
namespace dm = dartserve::model;

uint64_t MixSeed(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9e3779b97f4a7c15ULL * (b + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Prepares the batches of steps start, start+1, ... on its own thread, a few steps ahead.
// Batch s holds global sample positions [s*B, (s+1)*B), each mapped through its epoch's
// permutation, so the data order depends only on (seed, step).
class BatchLoader {
 public:
  BatchLoader(const InMemoryDataset& data, int batch_size, uint64_t seed, int64_t start)
      : data_(data), batch_size_(batch_size), seed_(seed), next_to_make_(start) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~BatchLoader() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  struct Item {
    int64_t step;
    torch::Tensor images, labels, indices;
  };

  // The batch of `step`, which must be the step after the previous call's.
  Item Next(int64_t step) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !ready_.empty(); });
    Item item = std::move(ready_.front());
    ready_.pop_front();
    cv_.notify_all();
    TORCH_CHECK(item.step == step, "batch loader out of sync");
    return item;
  }

 private:
  static constexpr size_t kDepth = 4;

  torch::Tensor Permutation(int64_t epoch) {
    if (epoch != perm_epoch_) {
      torch::Generator gen =
          at::make_generator<at::CPUGeneratorImpl>(MixSeed(seed_, 0x5eed0000 + epoch));
      perm_ = torch::randperm(data_.size(), gen, torch::kLong);
      perm_epoch_ = epoch;
    }
    return perm_;
  }

  void Loop() {
    const int64_t n = data_.size();
    while (true) {
      int64_t step;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || ready_.size() < kDepth; });
        if (stop_) return;
        step = next_to_make_++;
      }
      std::vector<int64_t> idx(batch_size_);
      for (int i = 0; i < batch_size_; ++i) {
        const int64_t g = step * batch_size_ + i;
        idx[i] = Permutation(g / n)[g % n].item<int64_t>();
      }
      const torch::Tensor indices = torch::tensor(idx, torch::kLong);
      auto [images, labels] = data_.Batch(indices);
      {
        std::lock_guard<std::mutex> lock(mu_);
        ready_.push_back({step, images, labels, indices});
      }
      cv_.notify_all();
    }
  }

  const InMemoryDataset& data_;
  const int batch_size_;
  const uint64_t seed_;
  torch::Tensor perm_;
  int64_t perm_epoch_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> ready_;
  int64_t next_to_make_;
  bool stop_ = false;
  std::thread thread_;
};

absl::StatusOr<InMemoryDataset> LoadTrainingData(const TrainConfig& config) {
  if (config.dataset == "fashion_mnist") return LoadFashionMnist("train", config.data_path);
  if (config.dataset == "image_folder") return LoadImageFolder(config.data_path);
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
  trainer->params_ = trainer->model_->parameters();
  trainer->ema_params_ = trainer->ema_->parameters();
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < trainer->params_.size(); ++i) {
      trainer->ema_params_[i].copy_(trainer->params_[i]);
      trainer->ema_params_[i].set_requires_grad(false);
      trainer->adam_m_.push_back(torch::zeros_like(trainer->params_[i]));
      trainer->adam_v_.push_back(torch::zeros_like(trainer->params_[i]));
    }
  }
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
  if (absl::Status s = trainer->Load(); !s.ok()) return s;
  if (absl::Status s = WriteFileAtomically((fs::path(out_dir) / "train_config.json").string(),
                                           TrainConfigToJson(config));
      !s.ok()) {
    return s;
  }
  trainer->loader_ =
      std::make_unique<BatchLoader>(trainer->data_, config.batch_size, config.seed, trainer->step_);
  return trainer;
}

double Trainer::LearningRate(int64_t step) const {
  if (step < config_.warmup_steps) return config_.lr * (step + 1) / config_.warmup_steps;
  const double span = std::max<int64_t>(1, config_.total_steps - config_.warmup_steps);
  const double progress = std::min(1.0, (step - config_.warmup_steps) / span);
  return config_.min_lr +
         0.5 * (config_.lr - config_.min_lr) * (1 + std::cos(std::numbers::pi * progress));
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
  if (config_.grad_clip > 0) torch::nn::utils::clip_grad_norm_(params_, config_.grad_clip);

  const double lr = LearningRate(step_);
  const int64_t t = step_ + 1;
  const double bc1 = 1 - std::pow(config_.beta1, t), bc2 = 1 - std::pow(config_.beta2, t);
  // EMA warm-up: early weights are poor, so average over a shorter horizon at first.
  const double decay = std::min(config_.ema_decay, (1.0 + step_) / (10.0 + step_));
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i];
    const torch::Tensor g = p.grad();
    if (!g.defined()) continue;
    adam_m_[i].mul_(config_.beta1).add_(g, 1 - config_.beta1);
    adam_v_[i].mul_(config_.beta2).addcmul_(g, g, 1 - config_.beta2);
    if (config_.weight_decay > 0 && p.dim() >= 2) p.mul_(1 - lr * config_.weight_decay);
    const torch::Tensor denom = (adam_v_[i] / bc2).sqrt_().add_(config_.adam_eps);
    p.addcdiv_(adam_m_[i], denom, -lr / bc1);
    ema_params_[i].mul_(decay).add_(p, 1 - decay);
  }
  ++step_;
  return loss.loss.item<double>();
}

absl::Status Trainer::SaveCheckpoint() {
  const fs::path state = fs::path(out_dir_) / "state";
  const fs::path tmp = fs::path(out_dir_) / "state.tmp";
  const fs::path old = fs::path(out_dir_) / "state.old";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", tmp.string()));

  std::vector<dm::TensorToWrite> optimizer;
  const auto named = model_->named_parameters();
  for (size_t i = 0; i < named.size(); ++i) {
    optimizer.push_back(dm::TensorToBytes("m/" + named[i].key(), adam_m_[i], dm::DType::kF32));
    optimizer.push_back(dm::TensorToBytes("v/" + named[i].key(), adam_v_[i], dm::DType::kF32));
  }
  const std::pair<const char*, std::vector<dm::TensorToWrite>> files[] = {
      {"model.safetensors", dm::WeightsToWrite(*model_, dm::DType::kF32)},
      {"ema.safetensors", dm::WeightsToWrite(*ema_, dm::DType::kF32)},
      {"optimizer.safetensors", std::move(optimizer)},
  };
  for (const auto& [name, tensors] : files) {
    absl::StatusOr<std::string> bytes = dm::SerializeSafetensors(tensors);
    if (!bytes.ok()) return bytes.status();
    if (absl::Status s = WriteFileAtomically((tmp / name).string(), *bytes); !s.ok()) return s;
  }
  if (absl::Status s = WriteFileAtomically((tmp / dm::kConfigFile).string(),
                                           dm::ModelConfigToJson(config_.model));
      !s.ok()) {
    return s;
  }
  const std::string meta = nlohmann::json({{"step", step_}}).dump() + "\n";
  if (absl::Status s = WriteFileAtomically((tmp / "state.json").string(), meta); !s.ok()) return s;
  // Swap in the new state; a crash between the renames leaves state.old, which Load() accepts.
  fs::remove_all(old, ec);
  if (fs::exists(state)) fs::rename(state, old, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot move ", state.string(), ": ", ec.message()));
  fs::rename(tmp, state, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot move ", tmp.string(), ": ", ec.message()));
  fs::remove_all(old, ec);
  return dm::SaveCheckpoint((fs::path(out_dir_) / "ema").string(), ema_);
}

absl::Status Trainer::Load() {
  fs::path dir = fs::path(out_dir_) / "state";
  if (!fs::exists(dir / "state.json")) dir = fs::path(out_dir_) / "state.old";
  if (!fs::exists(dir / "state.json")) return absl::OkStatus();  // fresh run
  const auto fail = [&](absl::string_view what) {
    return absl::FailedPreconditionError(absl::StrCat("resuming from ", dir.string(), ": ", what));
  };
  absl::StatusOr<std::string> config_text = ReadFile((dir / dm::kConfigFile).string());
  if (!config_text.ok()) return fail(config_text.status().message());
  absl::StatusOr<dm::ModelConfig> saved = dm::ModelConfigFromJson(*config_text);
  if (!saved.ok() || dm::ModelConfigToJson(*saved) != dm::ModelConfigToJson(config_.model)) {
    return fail("its model config differs from --config's (use a new output folder)");
  }
  for (const auto& [name, module] :
       {std::pair<const char*, torch::nn::Module*>{"model.safetensors", model_.get()},
        {"ema.safetensors", ema_.get()}}) {
    absl::StatusOr<dm::SafetensorsFile> file = dm::SafetensorsFile::Read((dir / name).string());
    if (!file.ok()) return fail(file.status().message());
    if (absl::Status s = dm::LoadWeights(*module, *file); !s.ok()) return fail(s.message());
  }
  absl::StatusOr<dm::SafetensorsFile> opt =
      dm::SafetensorsFile::Read((dir / "optimizer.safetensors").string());
  if (!opt.ok()) return fail(opt.status().message());
  torch::NoGradGuard no_grad;
  const auto named = model_->named_parameters();
  for (size_t i = 0; i < named.size(); ++i) {
    for (auto& [prefix, target] :
         {std::pair<std::string, torch::Tensor*>{"m/", &adam_m_[i]}, {"v/", &adam_v_[i]}}) {
      auto it = opt->tensors().find(prefix + named[i].key());
      if (it == opt->tensors().end() || at::IntArrayRef(it->second.shape) != target->sizes()) {
        return fail(
            absl::StrCat("optimizer state for ", named[i].key(), " is missing or misshapen"));
      }
      target->copy_(dm::TensorFromBytes(it->second, opt->Data(it->second)));
    }
  }
  absl::StatusOr<std::string> meta = ReadFile((dir / "state.json").string());
  if (!meta.ok()) return fail(meta.status().message());
  const nlohmann::json j = nlohmann::json::parse(*meta, nullptr, false);
  if (j.is_discarded() || !j.contains("step") || !j["step"].is_number_integer()) {
    return fail("state.json has no step");
  }
  step_ = j["step"].get<int64_t>();
  return absl::OkStatus();
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

absl::Status Trainer::Run(const std::atomic<bool>& stop, int64_t max_steps) {
  const int64_t end =
      max_steps < 0 ? config_.total_steps : std::min(config_.total_steps, step_ + max_steps);
  auto last_time = std::chrono::steady_clock::now();
  int64_t last_step = step_;
  double loss_sum = 0;
  while (step_ < end && !stop.load()) {
    loss_sum += TrainStep();
    if (step_ % config_.log_every == 0 || step_ == end) {
      const auto now = std::chrono::steady_clock::now();
      const double secs = std::chrono::duration<double>(now - last_time).count();
      const int64_t done = step_ - last_step;
      const double ips = done * config_.batch_size / std::max(secs, 1e-9);
      const double eta = (config_.total_steps - step_) * secs / std::max<int64_t>(done, 1);
      std::cout << absl::StrFormat("step %d/%d  loss %.5f  lr %.2e  %.1f img/s  eta %dh%02dm\n",
                                   step_, config_.total_steps,
                                   loss_sum / std::max<int64_t>(done, 1), LearningRate(step_ - 1),
                                   ips, static_cast<int>(eta / 3600),
                                   static_cast<int>(eta / 60) % 60)
                << std::flush;
      last_time = now;
      last_step = step_;
      loss_sum = 0;
    }
    if (step_ % config_.checkpoint_every == 0) {
      if (absl::Status s = SaveCheckpoint(); !s.ok()) return s;
    }
    if (config_.sample_every > 0 && step_ % config_.sample_every == 0) {
      if (absl::Status s = WriteSampleGrid(); !s.ok()) return s;
    }
  }
  return SaveCheckpoint();
}

}  // namespace dartserve::train
