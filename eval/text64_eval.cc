#include "eval/text64_eval.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "eval/prompt_eval.h"
#include "model/sampler.h"

namespace dartserve::eval {

using ::dartserve::data::CaptionedScene64;
using ::dartserve::data::kScene64Size;
using ::dartserve::data::kShapeChannels;
using ::dartserve::data::SceneImage64;

absl::StatusOr<Text64EvalReport> EvaluateTextModel64(model::Dart model,
                                                     const std::vector<CaptionedScene64>& prompts,
                                                     const TextEvalOptions& options) {
  const model::ModelConfig& config = model->config();
  if (config.conditioning != model::Conditioning::kText) {
    return absl::InvalidArgumentError("prompt evaluation needs a text-conditioned model");
  }
  if (config.pixel_size() != kScene64Size || config.pixel_channels() != kShapeChannels) {
    return absl::InvalidArgumentError(
        "64x64 prompt evaluation needs a model of 64x64 RGB images (the scenes world)");
  }
  if (options.per_prompt < 1) return absl::InvalidArgumentError("per_prompt: must be >= 1");
  std::vector<model::GenerateParams> params;
  std::vector<CaptionedScene64> asked;
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (int j = 0; j < options.per_prompt; ++j) {
      params.push_back({.prompt = prompts[i].text,
                        .seed = options.seed + i * options.per_prompt + j,
                        .guidance_scale = options.guidance_scale,
                        .temperature = options.temperature});
      asked.push_back(prompts[i]);
    }
  }
  Text64EvalReport report;
  const auto start = std::chrono::steady_clock::now();
  model::Sampler sampler(model, {.flow_steps = options.flow_steps});
  // A latent model's samples come back decoded (Sampler::Images).
  absl::StatusOr<torch::Tensor> images = sampler.GenerateBatch(params, options.batch);
  if (!images.ok()) return images.status();
  report.images = images->to(torch::kCPU);
  report.generation_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report.images_per_second = report.images.size(0) / report.generation_seconds;
  absl::StatusOr<std::vector<SceneImage64>> pixels = SceneImages64FromTensor(report.images);
  if (!pixels.ok()) return pixels.status();
  absl::StatusOr<Scene64Report> adherence = EvaluateScenes64(asked, *pixels);
  if (!adherence.ok()) return adherence.status();
  report.adherence = *std::move(adherence);
  return report;
}

}  // namespace dartserve::eval
