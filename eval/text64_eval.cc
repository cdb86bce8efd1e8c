#include "eval/text64_eval.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "eval/prompt_eval.h"

namespace dartserve::eval {

using ::dartserve::data::CaptionedScene64;
using ::dartserve::data::kScene64Size;
using ::dartserve::data::kShapeChannels;
using ::dartserve::data::SceneImage64;

absl::StatusOr<Text64EvalReport> EvaluateTextModel64(model::Dart model,
                                                     const std::vector<CaptionedScene64>& prompts,
                                                     const TextEvalOptions& options) {
  if (absl::Status s =
          CheckTextModel(model->config(), kScene64Size, "64x64 RGB images (the scenes world)");
      !s.ok()) {
    return s;
  }
  std::vector<std::string> texts;
  std::vector<CaptionedScene64> asked;
  for (const CaptionedScene64& p : prompts) {
    texts.push_back(p.text);
    for (int j = 0; j < options.per_prompt; ++j) asked.push_back(p);
  }
  absl::StatusOr<TimedImages> generated = SamplePrompts(model, texts, options);
  if (!generated.ok()) return generated.status();
  Text64EvalReport report;
  report.images = generated->images.to(torch::kCPU);
  report.generation_seconds = generated->seconds;
  report.images_per_second = report.images.size(0) / report.generation_seconds;
  absl::StatusOr<std::vector<SceneImage64>> pixels = SceneImages64FromTensor(report.images);
  if (!pixels.ok()) return pixels.status();
  absl::StatusOr<Scene64Report> adherence = EvaluateScenes64(asked, *pixels);
  if (!adherence.ok()) return adherence.status();
  report.adherence = *std::move(adherence);
  return report;
}

}  // namespace dartserve::eval
