#include "eval/eval.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "model/sampler.h"

namespace dartserve::eval {

using ::dartserve::data::kShapeChannels;
using ::dartserve::data::kShapeImageSize;
using ::dartserve::data::Prompt;
using ::dartserve::data::ShapeImage;

namespace {

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

absl::Status CheckTextModel(const model::ModelConfig& config, int size, const std::string& images) {
  if (config.conditioning != model::Conditioning::kText) {
    return absl::InvalidArgumentError("prompt evaluation needs a text-conditioned model");
  }
  if (config.pixel_size() != size || config.pixel_channels() != kShapeChannels) {
    return absl::InvalidArgumentError(absl::StrCat("prompt evaluation needs ", images));
  }
  return absl::OkStatus();
}

absl::StatusOr<TimedImages> SamplePrompts(model::Dart model, const std::vector<std::string>& texts,
                                          const TextEvalOptions& options) {
  if (options.per_prompt < 1) return absl::InvalidArgumentError("per_prompt: must be >= 1");
  std::vector<model::GenerateParams> params;
  for (size_t i = 0; i < texts.size(); ++i) {
    for (int j = 0; j < options.per_prompt; ++j) {
      params.push_back({.prompt = texts[i],
                        .seed = options.seed + i * options.per_prompt + j,
                        .guidance_scale = options.guidance_scale,
                        .temperature = options.temperature});
    }
  }
  return GenerateTimed(std::move(model), params, options.batch, options.flow_steps);
}

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
  if (absl::Status s =
          CheckTextModel(model->config(), kShapeImageSize, "32x32 RGB images (the shapes world)");
      !s.ok()) {
    return s;
  }
  std::vector<std::string> texts;
  std::vector<Prompt> asked;
  for (const Prompt& p : prompts) {
    texts.push_back(p.text);
    for (int j = 0; j < options.per_prompt; ++j) asked.push_back(p);
  }
  absl::StatusOr<TimedImages> generated = SamplePrompts(model, texts, options);
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
