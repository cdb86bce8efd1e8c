#include "eval/emoji_classifier.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "common/file_io.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"

namespace dartserve::eval {

namespace nn = torch::nn;
namespace dm = dartserve::model;
using ::dartserve::data::EmojiDataset;

namespace {

constexpr int64_t kEvalBatch = 256;

// Appends conv3x3 (no bias: the norm follows) -> GroupNorm -> ReLU to `seq`.
void AddConvNormRelu(nn::Sequential& seq, int in, int out, int stride, int groups) {
  seq->push_back(nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false)));
  seq->push_back(nn::GroupNorm(nn::GroupNormOptions(groups, out)));
  seq->push_back(nn::Functional(torch::relu));
}

// conv3x3-GN-ReLU-conv3x3-GN plus the input, then ReLU.
class ResidualBlockImpl : public nn::Module {
 public:
  ResidualBlockImpl(int channels, int groups) {
    conv1_ = register_module(
        "conv1", nn::Conv2d(nn::Conv2dOptions(channels, channels, 3).padding(1).bias(false)));
    norm1_ = register_module("norm1", nn::GroupNorm(nn::GroupNormOptions(groups, channels)));
    conv2_ = register_module(
        "conv2", nn::Conv2d(nn::Conv2dOptions(channels, channels, 3).padding(1).bias(false)));
    norm2_ = register_module("norm2", nn::GroupNorm(nn::GroupNormOptions(groups, channels)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = torch::relu(norm1_->forward(conv1_->forward(x)));
    return torch::relu(x + norm2_->forward(conv2_->forward(h)));
  }

 private:
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
};
TORCH_MODULE(ResidualBlock);

template <typename Fn>
void ForBatches(int64_t n, int64_t batch, Fn fn) {
  for (int64_t start = 0; start < n; start += batch) fn(start, std::min(batch, n - start));
}

}  // namespace

EmojiClassifierImpl::EmojiClassifierImpl(const EmojiClassifierConfig& config) : config_(config) {
  TORCH_CHECK(!config.stage_channels.empty() && config.num_concepts > 0 && config.num_styles > 0,
              "emoji classifier: needs stages, concepts and styles");
  nn::Sequential trunk;
  AddConvNormRelu(trunk, 3, config.stem_channels, config.stem_stride, config.groups);
  int in = config.stem_channels;
  for (const int out : config.stage_channels) {
    AddConvNormRelu(trunk, in, out, 2, config.groups);
    for (int b = 0; b < config.blocks_per_stage; ++b) {
      trunk->push_back(ResidualBlock(out, config.groups));
    }
    in = out;
  }
  trunk_ = register_module("trunk", trunk);
  concept_head_ = register_module("concept_head", nn::Linear(in, config.num_concepts));
  style_head_ = register_module("style_head", nn::Linear(in, config.num_styles));
}

torch::Tensor EmojiClassifierImpl::Features(const torch::Tensor& x) {
  return trunk_->forward(x).mean({2, 3});
}

std::pair<torch::Tensor, torch::Tensor> EmojiClassifierImpl::forward(const torch::Tensor& x) {
  const torch::Tensor f = Features(x);
  return {concept_head_->forward(f), style_head_->forward(f)};
}

torch::Tensor AugmentEmoji(const torch::Tensor& x, const EmojiAugmentation& options,
                           torch::Generator& gen) {
  if (!options.enabled) return x;
  const int64_t b = x.size(0);
  const auto uniform = [&](double lo, double hi) {
    return torch::rand({b}, gen, torch::kFloat) * (hi - lo) + lo;
  };
  // affine_grid maps output to input coordinates (normalised to [-1, 1]): a zoom by s samples
  // the input at 1/s of the distance from the centre; a shift of d pixels is 2d/S.
  const torch::Tensor inv_scale = 1.0 / uniform(options.min_scale, options.max_scale);
  const double to_norm = 2.0 / static_cast<double>(x.size(3));
  const torch::Tensor tx = uniform(-options.max_shift, options.max_shift) * to_norm;
  const torch::Tensor ty = uniform(-options.max_shift, options.max_shift) * to_norm;
  const torch::Tensor zero = torch::zeros({b});
  const torch::Tensor theta = torch::stack(
      {torch::stack({inv_scale, zero, tx}, 1), torch::stack({zero, inv_scale, ty}, 1)}, 1);
  const torch::Tensor grid = torch::nn::functional::affine_grid(theta, x.sizes(), false);
  // grid_sample fills with 0 outside; sampling x - 1 and adding 1 back fills with white (1).
  torch::Tensor y =
      torch::nn::functional::grid_sample(x - 1, grid,
                                         torch::nn::functional::GridSampleFuncOptions()
                                             .mode(torch::kBilinear)
                                             .padding_mode(torch::kZeros)
                                             .align_corners(false)) +
      1;
  // Colour jitter about white, so the background stays white as it is in every real image.
  const torch::Tensor contrast =
      uniform(1 - options.contrast, 1 + options.contrast).view({-1, 1, 1, 1});
  const torch::Tensor brightness =
      uniform(-options.brightness, options.brightness).view({-1, 1, 1, 1});
  return (1 - (1 - y) * contrast + brightness).clamp(-1, 1);
}

torch::Tensor EmojiStyleLabels(const EmojiDataset& data) {
  std::vector<int64_t> styles;
  styles.reserve(data.entry_of.size());
  for (const int e : data.entry_of) styles.push_back(data.index.entries[e].style_id);
  return torch::tensor(styles, torch::kLong);
}

EmojiClassifier TrainEmojiClassifier(EmojiClassifierConfig config, const EmojiDataset& train,
                                     const EmojiClassifierTraining& options) {
  if (config.num_concepts <= 0) config.num_concepts = train.data.num_classes;
  torch::manual_seed(options.seed);
  EmojiClassifier model(config);
  // Weight decay on conv and linear weights only, not on norms' scales or biases.
  std::vector<torch::Tensor> decayed, plain;
  for (const torch::Tensor& p : model->parameters()) (p.dim() > 1 ? decayed : plain).push_back(p);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      decayed, std::make_unique<torch::optim::AdamWOptions>(
                   torch::optim::AdamWOptions(options.lr).weight_decay(options.weight_decay)));
  groups.emplace_back(plain, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(options.lr).weight_decay(0)));
  torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(options.lr));

  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const torch::Tensor styles = EmojiStyleLabels(train);
  const int64_t n = train.data.size();
  const int64_t batch = std::min<int64_t>(options.batch_size, n);
  const int64_t steps_per_epoch = n / batch;
  int64_t total = steps_per_epoch * options.epochs;
  if (options.max_steps > 0) total = std::min(total, options.max_steps);
  const auto ce =
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(options.label_smoothing);
  int64_t step = 0;
  model->train();
  for (int epoch = 0; epoch < options.epochs && step < total; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    const torch::Tensor perm = torch::randperm(n, gen, torch::kLong);
    double loss_sum = 0;
    int64_t seen = 0;
    for (int64_t s = 0; s < steps_per_epoch && step < total; ++s, ++step) {
      const torch::Tensor rows = perm.narrow(0, s * batch, batch);
      auto [x, concepts] = train.data.Batch(rows);
      x = AugmentEmoji(x, options.augmentation, gen);
      // Linear warm-up, then cosine from lr down to min_lr at the last step.
      const double t = static_cast<double>(step) / std::max<int64_t>(1, total - 1);
      double lr = options.min_lr +
                  0.5 * (options.lr - options.min_lr) * (1 + std::cos(std::numbers::pi * t));
      if (step < options.warmup_steps) lr *= static_cast<double>(step + 1) / options.warmup_steps;
      for (auto& group : opt.param_groups()) {
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      }
      opt.zero_grad();
      auto [concept_logits, style_logits] = model->forward(x);
      torch::Tensor loss =
          torch::nn::functional::cross_entropy(concept_logits, concepts, ce) +
          torch::nn::functional::cross_entropy(style_logits, styles.index({rows}), ce);
      loss.backward();
      opt.step();
      loss_sum += loss.item<double>() * batch;
      seen += batch;
    }
    if (options.on_epoch && seen > 0) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      options.on_epoch(epoch, loss_sum / seen, seen / seconds);
    }
  }
  model->eval();
  return model;
}

EmojiPredictions PredictEmoji(EmojiClassifier& model, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> top5, style;
  const int64_t k = std::min(5, model->config().num_concepts);
  ForBatches(images.size(0), kEvalBatch, [&](int64_t start, int64_t count) {
    auto [concept_logits, style_logits] = model->forward(images.narrow(0, start, count));
    top5.push_back(std::get<1>(concept_logits.topk(k, 1)));
    style.push_back(style_logits.argmax(1));
  });
  return {.concept_top5 = torch::cat(top5), .style = torch::cat(style)};
}

torch::Tensor EmojiFeatures(EmojiClassifier& model, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  ForBatches(images.size(0), kEvalBatch, [&](int64_t start, int64_t count) {
    parts.push_back(model->Features(images.narrow(0, start, count)).to(torch::kDouble));
  });
  return torch::cat(parts);
}

EmojiAccuracy ScoreEmoji(const EmojiPredictions& predictions, const torch::Tensor& concepts,
                         const torch::Tensor& styles) {
  EmojiAccuracy a;
  a.images = concepts.size(0);
  if (a.images == 0) return a;
  const torch::Tensor hits = predictions.concept_top5 == concepts.view({-1, 1});
  a.concept_top1 = hits.select(1, 0).to(torch::kDouble).mean().item<double>();
  a.concept_top5 = hits.any(1).to(torch::kDouble).mean().item<double>();
  const torch::Tensor scored = styles >= 0;
  if (scored.any().item<bool>()) {
    a.style = (predictions.style.index({scored}) == styles.index({scored}))
                  .to(torch::kDouble)
                  .mean()
                  .item<double>();
  }
  return a;
}

EmojiAccuracy MeasureEmojiAccuracy(EmojiClassifier& model, const EmojiDataset& data) {
  const auto [x, concepts] = data.data.Batch(torch::arange(data.data.size(), torch::kLong));
  return ScoreEmoji(PredictEmoji(model, x), concepts, EmojiStyleLabels(data));
}

RealFeatureSummary SummarizeRealFeatures(EmojiClassifier& model, const torch::Tensor& images,
                                         uint64_t seed) {
  const torch::Tensor features = EmojiFeatures(model, images);
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const torch::Tensor perm = torch::randperm(features.size(0), gen, torch::kLong);
  const int64_t half = features.size(0) / 2;
  RealFeatureSummary out;
  out.stats = ComputeFeatureStats(features);
  out.fid_floor = FrechetDistance(features.index({perm.narrow(0, 0, half)}),
                                  features.index({perm.narrow(0, half, half)}));
  return out;
}

namespace {

constexpr char kConfigFile[] = "classifier.json";
constexpr char kWeightsFile[] = "classifier.safetensors";
constexpr char kIndexFile[] = "index.tsv";
constexpr char kRealFeaturesFile[] = "real_features.safetensors";

nlohmann::json AccuracyJson(const EmojiAccuracy& a) {
  return {{"images", a.images},
          {"concept_top1", a.concept_top1},
          {"concept_top5", a.concept_top5},
          {"style", a.style}};
}

EmojiAccuracy AccuracyFromJson(const nlohmann::json& j) {
  return {.images = j.value("images", int64_t{0}),
          .concept_top1 = j.value("concept_top1", 0.0),
          .concept_top5 = j.value("concept_top5", 0.0),
          .style = j.value("style", -1.0)};
}

absl::StatusOr<EmojiClassifierConfig> ConfigFromJson(const nlohmann::json& j) {
  EmojiClassifierConfig c;
  try {
    c.image_size = j.at("image_size").get<int>();
    c.stem_channels = j.at("stem_channels").get<int>();
    c.stem_stride = j.at("stem_stride").get<int>();
    c.stage_channels = j.at("stage_channels").get<std::vector<int>>();
    c.blocks_per_stage = j.at("blocks_per_stage").get<int>();
    c.groups = j.at("groups").get<int>();
    c.num_concepts = j.at("num_concepts").get<int>();
    c.num_styles = j.at("num_styles").get<int>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
  bool ok = c.image_size > 0 && c.groups > 0 && c.stem_channels % c.groups == 0 &&
            (c.stem_stride == 1 || c.stem_stride == 2) && !c.stage_channels.empty() &&
            c.blocks_per_stage >= 0 && c.num_concepts > 0 && c.num_styles > 0;
  for (const int w : c.stage_channels) ok = ok && w > 0 && w % c.groups == 0;
  if (!ok) return absl::InvalidArgumentError("inconsistent sizes");
  return c;
}

}  // namespace

absl::Status SaveEmojiClassifier(const std::string& dir, EmojiClassifier& model,
                                 const EmojiClassifierMetrics& metrics,
                                 const std::string& index_tsv, const FeatureStats& real) {
  std::filesystem::create_directories(dir);
  absl::StatusOr<std::string> weights =
      dm::SerializeSafetensors(dm::WeightsToWrite(*model, dm::DType::kF32));
  if (!weights.ok()) return weights.status();
  absl::StatusOr<std::string> stats =
      dm::SerializeSafetensors({dm::TensorToBytes("mean", real.mean, dm::DType::kF32),
                                dm::TensorToBytes("covariance", real.covariance, dm::DType::kF32)});
  if (!stats.ok()) return stats.status();
  const EmojiClassifierConfig& c = model->config();
  const nlohmann::json meta = {{"image_size", c.image_size},
                               {"stem_channels", c.stem_channels},
                               {"stem_stride", c.stem_stride},
                               {"stage_channels", c.stage_channels},
                               {"blocks_per_stage", c.blocks_per_stage},
                               {"groups", c.groups},
                               {"num_concepts", c.num_concepts},
                               {"num_styles", c.num_styles},
                               {"feature_dim", c.feature_dim()},
                               {"held_out_accuracy", AccuracyJson(metrics.held_out)},
                               {"train_accuracy", AccuracyJson(metrics.train)},
                               {"fid_floor", metrics.fid_floor},
                               {"epochs", metrics.epochs},
                               {"train_seconds", metrics.train_seconds},
                               {"threads", metrics.threads}};
  const std::filesystem::path d(dir);
  for (const auto& [name, bytes] :
       {std::pair<const char*, const std::string*>{kWeightsFile, &*weights},
        {kRealFeaturesFile, &*stats},
        {kIndexFile, &index_tsv}}) {
    if (absl::Status s = WriteFileAtomically((d / name).string(), *bytes); !s.ok()) return s;
  }
  return WriteFileAtomically((d / kConfigFile).string(), meta.dump(2) + "\n");
}

absl::StatusOr<EmojiClassifierFolder> LoadEmojiClassifier(const std::string& dir) {
  const std::filesystem::path d(dir);
  const std::string config_path = (d / kConfigFile).string();
  absl::StatusOr<std::string> text = ReadFile(config_path);
  if (!text.ok()) return text.status();
  const nlohmann::json meta = nlohmann::json::parse(*text, nullptr, false);
  if (meta.is_discarded() || !meta.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": not a JSON object"));
  }
  absl::StatusOr<EmojiClassifierConfig> config = ConfigFromJson(meta);
  if (!config.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", config.status().message()));
  }
  EmojiClassifierFolder out;
  out.model = EmojiClassifier(*config);
  const std::string weights_path = (d / kWeightsFile).string();
  absl::StatusOr<dm::SafetensorsFile> weights = dm::SafetensorsFile::Read(weights_path);
  if (!weights.ok()) return weights.status();
  if (absl::Status s = dm::LoadWeights(*out.model, *weights); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(weights_path, ": ", s.message()));
  }
  out.model->eval();

  const std::string stats_path = (d / kRealFeaturesFile).string();
  absl::StatusOr<dm::SafetensorsFile> stats = dm::SafetensorsFile::Read(stats_path);
  if (!stats.ok()) return stats.status();
  const auto mean = stats->tensors().find("mean");
  const auto cov = stats->tensors().find("covariance");
  const int64_t f = config->feature_dim();
  if (mean == stats->tensors().end() || cov == stats->tensors().end() ||
      mean->second.shape != std::vector<int64_t>{f} ||
      cov->second.shape != std::vector<int64_t>{f, f}) {
    return absl::InvalidArgumentError(
        absl::StrCat(stats_path, ": needs mean [", f, "] and covariance [", f, ", ", f, "]"));
  }
  out.real.mean = dm::TensorFromBytes(mean->second, stats->Data(mean->second)).to(torch::kDouble);
  out.real.covariance =
      dm::TensorFromBytes(cov->second, stats->Data(cov->second)).to(torch::kDouble);

  absl::StatusOr<data::EmojiIndex> index = data::LoadEmojiIndex(dir);
  if (!index.ok()) return index.status();
  if (static_cast<int>(index->concepts.size()) != config->num_concepts) {
    return absl::InvalidArgumentError(
        absl::StrCat((d / kIndexFile).string(), ": ", index->concepts.size(),
                     " concepts, but the classifier has ", config->num_concepts));
  }
  out.index = *std::move(index);
  const nlohmann::json none = nlohmann::json::object();
  out.metrics.held_out = AccuracyFromJson(meta.value("held_out_accuracy", none));
  out.metrics.train = AccuracyFromJson(meta.value("train_accuracy", none));
  out.metrics.fid_floor = meta.value("fid_floor", -1.0);
  out.metrics.epochs = meta.value("epochs", 0);
  out.metrics.train_seconds = meta.value("train_seconds", 0.0);
  out.metrics.threads = meta.value("threads", 1);
  return out;
}

}  // namespace dartserve::eval
