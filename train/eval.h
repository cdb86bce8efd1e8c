// Sample-quality evaluation of a class-conditional checkpoint with the shipped classifier:
// conditional accuracy (fraction of class-c samples classified as c) and FID on the classifier's
// penultimate features against a reference set (the Fashion-MNIST test split).
#ifndef DARTSERVE_TRAIN_EVAL_H_
#define DARTSERVE_TRAIN_EVAL_H_

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "model/dart.h"
#include "train/classifier.h"

namespace dartserve::train {

struct EvalOptions {
  int per_class = 1000;
  float guidance_scale = 1.0f;
  float temperature = 1.0f;
  uint64_t seed = 0;   // sample i of class c uses seed + c * per_class + i
  int batch = 100;     // requests stepped together
  int flow_steps = 0;  // flow head: ODE steps per DART step (0: the model config's)
};

struct EvalReport {
  int64_t num_images = 0;
  double conditional_accuracy = 0;
  std::vector<double> per_class_accuracy;
  double fid = -1;  // -1 when no reference features were given
  double generation_seconds = 0;
  double images_per_second = 0;
  torch::Tensor images;  // [N, C, H, W], class-major
};

// Generates `per_class` samples for every class of `model` and scores them. `reference_features`
// ([M, F] from ExtractFeatures) may be undefined to skip FID.
absl::StatusOr<EvalReport> EvaluateClassModel(model::Dart model, Classifier& classifier,
                                              const torch::Tensor& reference_features,
                                              const EvalOptions& options);

}  // namespace dartserve::train

#endif  // DARTSERVE_TRAIN_EVAL_H_
