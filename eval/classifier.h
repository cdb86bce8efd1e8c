// A small CNN classifier for Fashion-MNIST-sized images, used to measure generated samples:
// conditional accuracy (is a sample of class c classified as c?) and FID computed on its
// penultimate features. A fixed, shipped classifier makes the numbers comparable across models.
#ifndef DARTSERVE_EVAL_CLASSIFIER_H_
#define DARTSERVE_EVAL_CLASSIFIER_H_

#include <torch/torch.h>

#include <string>

#include "absl/status/statusor.h"
#include "data/dataset.h"

namespace dartserve::eval {

// conv3x3(32) -> ReLU -> maxpool2 -> conv3x3(64) -> ReLU -> maxpool2 -> Linear(128) -> ReLU
// [features] -> Linear(num_classes). Input [B, C, 28, 28] in [-1, 1].
class ClassifierImpl : public torch::nn::Module {
 public:
  ClassifierImpl(int channels, int image_size, int num_classes);
  torch::Tensor Features(const torch::Tensor& x);  // [B, 128]
  torch::Tensor forward(const torch::Tensor& x);   // logits [B, num_classes]

  int channels() const { return channels_; }
  int image_size() const { return image_size_; }
  int num_classes() const { return num_classes_; }

 private:
  int channels_, image_size_, num_classes_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear fc_{nullptr}, out_{nullptr};
};
TORCH_MODULE(Classifier);

struct ClassifierTraining {
  int epochs = 4;
  int batch_size = 128;
  double lr = 2e-3;
  uint64_t seed = 0;
};

// Trains on `train`, reports accuracy on `test` through `test_accuracy`.
Classifier TrainClassifier(const data::InMemoryDataset& train, const data::InMemoryDataset& test,
                           const ClassifierTraining& options, double* test_accuracy);

// Predicted class of each of `images` ([N, C, H, W] in [-1, 1]), batched: [N] int64.
torch::Tensor Predict(Classifier& classifier, const torch::Tensor& images);
// Fraction of `images` classified as `labels`.
double Accuracy(Classifier& classifier, const torch::Tensor& images, const torch::Tensor& labels);
// Penultimate features of `images`, batched: [N, 128] double.
torch::Tensor ExtractFeatures(Classifier& classifier, const torch::Tensor& images);

// Folder with classifier.json ({channels, image_size, num_classes, test_accuracy}) and
// classifier.safetensors.
absl::Status SaveClassifier(const std::string& dir, Classifier& classifier, double test_accuracy);
absl::StatusOr<Classifier> LoadClassifier(const std::string& dir, double* test_accuracy = nullptr);

// A Gaussian fitted to a feature set: what FID compares, and what a classifier folder can store
// instead of the features themselves.
struct FeatureStats {
  torch::Tensor mean;        // [F] double
  torch::Tensor covariance;  // [F, F] double, unbiased (divided by N - 1)
};

// The mean and covariance of `features` ([N, F], N > 1; any floating dtype).
FeatureStats ComputeFeatureStats(const torch::Tensor& features);

// Fréchet distance between two Gaussians:
// |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).
double FrechetDistance(const FeatureStats& a, const FeatureStats& b);
// The same between Gaussians fitted to two feature sets ([N, F] each, N > 1).
double FrechetDistance(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace dartserve::eval

#endif  // DARTSERVE_EVAL_CLASSIFIER_H_
