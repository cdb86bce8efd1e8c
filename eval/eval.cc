#include "eval/eval.h"

#include <chrono>

#include "model/sampler.h"

namespace dartserve::eval {

using ::dartserve::data::kShapeChannels;
using ::dartserve::data::kShapeImageSize;
using ::dartserve::data::Prompt;
using ::dartserve::data::ShapeImage;

namespace {

struct TimedImages {
  torch::Tensor images;
  double seconds = 0;
};

// Both evaluations' generation: every request through one Sampler, `batch` stepped together,
// timed from the first step to the last image.
absl::StatusOr<TimedImages> GenerateTimed(model::Dart model,
                                          const std::vector<model::GenerateParams>& params,
                                          int batch, int flow_steps) {
  model::Sampler sampler(std::move(model), {.flow_steps = flow_steps});
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<torch::Tensor> images = sampler.GenerateBatch(params, batch);
  if (!images.ok()) return images.status();
  return TimedImages{
      .images = *std::move(images),
      .seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
}

}  // namespace

absl::StatusOr<EvalReport> EvaluateClassModel(model::Dart model, Classifier& classifier,
                                              const torch::Tensor& reference_features,
                                              const EvalOptions& options) {
  const model::ModelConfig& config = model->config();
  if (config.conditioning != model::Conditioning::kClass) {
    return absl::InvalidArgumentError("evaluation needs a class-conditional model");
  }
  if (config.num_classes != classifier->num_classes() ||
      config.channels != classifier->channels() || config.image_size != classifier->image_size()) {
    return absl::InvalidArgumentError(
        "the classifier does not match the model's classes or images");
  }
  std::vector<model::GenerateParams> params;
  std::vector<int64_t> labels;
  for (int c = 0; c < config.num_classes; ++c) {
    for (int i = 0; i < options.per_class; ++i) {
      params.push_back({.class_id = c,
                        .seed = options.seed + static_cast<uint64_t>(c) * options.per_class + i,
                        .guidance_scale = options.guidance_scale,
                        .temperature = options.temperature});
      labels.push_back(c);
    }
  }
  absl::StatusOr<TimedImages> generated =
      GenerateTimed(model, params, options.batch, options.flow_steps);
  if (!generated.ok()) return generated.status();
  EvalReport report;
  report.images = generated->images;
  report.generation_seconds = generated->seconds;
  report.num_images = report.images.size(0);
  report.images_per_second = report.num_images / report.generation_seconds;

  torch::NoGradGuard no_grad;
  const torch::Tensor y = torch::tensor(labels, torch::kLong);
  // Classify once; overall and per-class accuracy are means over slices of the same vector.
  const torch::Tensor correct = (Predict(classifier, report.images) == y).to(torch::kDouble);
  report.conditional_accuracy = correct.mean().item<double>();
  for (int c = 0; c < config.num_classes; ++c) {
    const int64_t first = static_cast<int64_t>(c) * options.per_class;
    report.per_class_accuracy.push_back(
        correct.narrow(0, first, options.per_class).mean().item<double>());
  }
  if (reference_features.defined()) {
    report.fid = FrechetDistance(ExtractFeatures(classifier, report.images), reference_features);
  }
  return report;
}

absl::StatusOr<TextEvalReport> EvaluateTextModel(model::Dart model,
                                                 const std::vector<Prompt>& prompts,
                                                 const ShapeClassifier& classifier,
                                                 const TextEvalOptions& options) {
  const model::ModelConfig& config = model->config();
  if (config.conditioning != model::Conditioning::kText) {
    return absl::InvalidArgumentError("prompt evaluation needs a text-conditioned model");
  }
  if (config.image_size != kShapeImageSize || config.channels != kShapeChannels) {
    return absl::InvalidArgumentError(
        "prompt evaluation needs 32x32 RGB images (the shapes world)");
  }
  if (options.per_prompt < 1) return absl::InvalidArgumentError("per_prompt: must be >= 1");
  std::vector<model::GenerateParams> params;
  std::vector<Prompt> asked;
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (int j = 0; j < options.per_prompt; ++j) {
      params.push_back({.prompt = prompts[i].text,
                        .seed = options.seed + i * options.per_prompt + j,
                        .guidance_scale = options.guidance_scale,
                        .temperature = options.temperature});
      asked.push_back(prompts[i]);
    }
  }
  absl::StatusOr<TimedImages> generated =
      GenerateTimed(model, params, options.batch, options.flow_steps);
  if (!generated.ok()) return generated.status();
  TextEvalReport report;
  report.images = generated->images;
  report.generation_seconds = generated->seconds;
  report.images_per_second = report.images.size(0) / report.generation_seconds;
  absl::StatusOr<std::vector<ShapeImage>> pixels = ShapeImagesFromTensor(report.images);
  if (!pixels.ok()) return pixels.status();
  absl::StatusOr<PromptEvalReport> adherence = EvaluatePrompts(asked, *pixels, classifier);
  if (!adherence.ok()) return adherence.status();
  report.adherence = *std::move(adherence);
  return report;
}

}  // namespace dartserve::eval
