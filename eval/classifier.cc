#include "eval/classifier.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/file_io.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"

namespace dartserve::eval {

using ::dartserve::data::InMemoryDataset;

namespace nn = torch::nn;
namespace dm = dartserve::model;

ClassifierImpl::ClassifierImpl(int channels, int image_size, int num_classes)
    : channels_(channels), image_size_(image_size), num_classes_(num_classes) {
  conv1_ = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(channels, 32, 3).padding(1)));
  conv2_ = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(32, 64, 3).padding(1)));
  const int64_t side = image_size / 4;
  fc_ = register_module("fc", nn::Linear(64 * side * side, 128));
  out_ = register_module("out", nn::Linear(128, num_classes));
}

torch::Tensor ClassifierImpl::Features(const torch::Tensor& x) {
  torch::Tensor h = torch::max_pool2d(torch::relu(conv1_->forward(x)), 2);
  h = torch::max_pool2d(torch::relu(conv2_->forward(h)), 2);
  return torch::relu(fc_->forward(h.flatten(1)));
}

torch::Tensor ClassifierImpl::forward(const torch::Tensor& x) { return out_->forward(Features(x)); }

namespace {

template <typename Fn>
void ForBatches(int64_t n, int64_t batch, Fn fn) {
  for (int64_t start = 0; start < n; start += batch) fn(start, std::min(batch, n - start));
}

}  // namespace

Classifier TrainClassifier(const InMemoryDataset& train, const InMemoryDataset& test,
                           const ClassifierTraining& options, double* test_accuracy) {
  torch::manual_seed(options.seed);
  Classifier model(static_cast<int>(train.images.size(1)), static_cast<int>(train.images.size(2)),
                   train.num_classes);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(options.lr));
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const int64_t steps_per_epoch = train.size() / options.batch_size;
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    model->train();
    const torch::Tensor perm = torch::randperm(train.size(), gen, torch::kLong);
    // Step decay: the last epoch runs at a tenth of the rate.
    for (auto& group : opt.param_groups()) {
      static_cast<torch::optim::AdamOptions&>(group.options())
          .lr(epoch + 1 == options.epochs && epoch > 0 ? options.lr / 10 : options.lr);
    }
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      auto [x, y] = train.Batch(perm.narrow(0, s * options.batch_size, options.batch_size));
      // Light augmentation: horizontal flips (Fashion-MNIST classes are mirror-symmetric).
      const torch::Tensor flip = torch::rand({x.size(0)}, gen, torch::kFloat) < 0.5;
      x = torch::where(flip.view({-1, 1, 1, 1}), x.flip(3), x);
      opt.zero_grad();
      torch::nn::functional::cross_entropy(model->forward(x), y).backward();
      opt.step();
    }
  }
  model->eval();
  if (test_accuracy != nullptr) {
    auto [x, y] = test.Batch(torch::arange(test.size(), torch::kLong));
    *test_accuracy = Accuracy(model, x, y);
  }
  return model;
}

torch::Tensor Predict(Classifier& classifier, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  ForBatches(images.size(0), 500, [&](int64_t start, int64_t n) {
    parts.push_back(classifier->forward(images.narrow(0, start, n)).argmax(1));
  });
  return torch::cat(parts);
}

double Accuracy(Classifier& classifier, const torch::Tensor& images, const torch::Tensor& labels) {
  return (Predict(classifier, images) == labels).to(torch::kDouble).mean().item<double>();
}

torch::Tensor ExtractFeatures(Classifier& classifier, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  ForBatches(images.size(0), 500, [&](int64_t start, int64_t n) {
    parts.push_back(classifier->Features(images.narrow(0, start, n)).to(torch::kDouble));
  });
  return torch::cat(parts);
}

absl::Status SaveClassifier(const std::string& dir, Classifier& classifier, double test_accuracy) {
  std::filesystem::create_directories(dir);
  absl::StatusOr<std::string> bytes =
      dm::SerializeSafetensors(dm::WeightsToWrite(*classifier, dm::DType::kF32));
  if (!bytes.ok()) return bytes.status();
  if (absl::Status s = WriteFileAtomically(dir + "/classifier.safetensors", *bytes); !s.ok()) {
    return s;
  }
  const nlohmann::json meta = {{"channels", classifier->channels()},
                               {"image_size", classifier->image_size()},
                               {"num_classes", classifier->num_classes()},
                               {"test_accuracy", test_accuracy}};
  return WriteFileAtomically(dir + "/classifier.json", meta.dump(2) + "\n");
}

absl::StatusOr<Classifier> LoadClassifier(const std::string& dir, double* test_accuracy) {
  absl::StatusOr<std::string> text = ReadFile(dir + "/classifier.json");
  if (!text.ok()) return text.status();
  const nlohmann::json meta = nlohmann::json::parse(*text, nullptr, false);
  if (meta.is_discarded() || !meta.contains("channels") || !meta.contains("image_size") ||
      !meta.contains("num_classes")) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/classifier.json: malformed"));
  }
  Classifier model(meta["channels"].get<int>(), meta["image_size"].get<int>(),
                   meta["num_classes"].get<int>());
  absl::StatusOr<dm::SafetensorsFile> file =
      dm::SafetensorsFile::Read(dir + "/classifier.safetensors");
  if (!file.ok()) return file.status();
  if (absl::Status s = dm::LoadWeights(*model, *file); !s.ok()) return s;
  if (test_accuracy != nullptr) *test_accuracy = meta.value("test_accuracy", 0.0);
  model->eval();
  return model;
}

namespace {

// Symmetric PSD square root through the eigendecomposition (negative round-off clipped).
torch::Tensor SqrtPsd(const torch::Tensor& m) {
  auto [values, vectors] = torch::linalg::eigh(m, "L");
  return vectors.matmul(torch::diag(values.clamp_min(0).sqrt())).matmul(vectors.transpose(0, 1));
}

}  // namespace

FeatureStats ComputeFeatureStats(const torch::Tensor& features) {
  torch::NoGradGuard no_grad;
  const torch::Tensor x = features.to(torch::kDouble);
  const torch::Tensor mean = x.mean(0);
  const torch::Tensor centred = x - mean;
  return {.mean = mean, .covariance = centred.transpose(0, 1).matmul(centred) / (x.size(0) - 1)};
}

double FrechetDistance(const FeatureStats& a, const FeatureStats& b) {
  torch::NoGradGuard no_grad;
  const torch::Tensor mu1 = a.mean.to(torch::kDouble), mu2 = b.mean.to(torch::kDouble);
  const torch::Tensor s1 = a.covariance.to(torch::kDouble), s2 = b.covariance.to(torch::kDouble);
  const torch::Tensor r1 = SqrtPsd(s1);
  const torch::Tensor cross = SqrtPsd(r1.matmul(s2).matmul(r1));
  return ((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * cross.trace()).item<double>();
}

double FrechetDistance(const torch::Tensor& a, const torch::Tensor& b) {
  return FrechetDistance(ComputeFeatureStats(a), ComputeFeatureStats(b));
}

}  // namespace dartserve::eval
