// GenEval-style prompt adherence for the procedural shapes world: given the prompts a
// text-to-image model was asked (FixedPromptSet in data/shapes.h) and the images it made,
// AnalyzeImage each image with a shape classifier (the learned one in
// eval/attribute_classifier.h, or the geometric default), CheckScene it against its prompt's
// scene and tally per-attribute and all-correct accuracy.
//
// Images are passed as ShapeImage (planar 8-bit RGB, the analysis's own input), so scoring stays
// a plain loop over bytes and is independent of how the images were produced;
// ShapeImagesFromTensor converts a model's float output with the project's one rounding rule
// (SceneImages64FromTensor the same for the 64 world, whose check is eval/scene64_eval.h).
#ifndef DARTSERVE_EVAL_PROMPT_EVAL_H_
#define DARTSERVE_EVAL_PROMPT_EVAL_H_

#include <torch/torch.h>

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/shapes.h"
#include "eval/shape_analysis.h"

namespace dartserve::eval {

struct PromptResult {
  std::string prompt;
  SceneCheck check;
  int background_color = 0;         // kBackgroundColors index
  std::vector<SeenObject> objects;  // largest first
};

struct PromptEvalReport {
  CheckTally tally;                   // tally.Rate(tally.color) etc. are the accuracies
  std::vector<PromptResult> results;  // one per image, in input order
};

// Scores images[i] against prompts[i]. To score several samples of one prompt, repeat the prompt.
// INVALID_ARGUMENT when the two lists differ in length.
absl::StatusOr<PromptEvalReport> EvaluatePrompts(
    const std::vector<data::Prompt>& prompts, const std::vector<data::ShapeImage>& images,
    const ShapeClassifier& classifier = GeometricShapeClassifier);

// The renderings RenderScene(prompt.scene): what a perfect model would draw.
std::vector<data::ShapeImage> ReferenceImages(const std::vector<data::Prompt>& prompts);

// [N, 3, 32, 32] images -> ShapeImages. Floats are taken as [-1, 1], clamped, and quantised like
// model/image.h's TensorToPixels ((v + 1) * 127.5, rounded half to even); uint8 is copied as is.
// Any device. INVALID_ARGUMENT for another shape or dtype.
absl::StatusOr<std::vector<data::ShapeImage>> ShapeImagesFromTensor(const torch::Tensor& images);
// The same for the 64 world: [N, 3, 64, 64] images -> SceneImage64s.
absl::StatusOr<std::vector<data::SceneImage64>> SceneImages64FromTensor(
    const torch::Tensor& images);

// JSON text: {"n", "correct": {color, shape, position, size, count, background, all},
//  "accuracy": {same keys, as fractions}, "results": [{"prompt", "check": {same keys, bools},
//  "background": name, "objects": [{"shape", "color", "size", "position" (names), "area"}]}]}.
// Strings rather than a JSON type, so callers need no JSON library.
std::string ReportToJson(const PromptEvalReport& report, int indent = 2);
// Inverse of ReportToJson (the "accuracy" block is derived from "correct", so it is not read).
// INVALID_ARGUMENT for malformed JSON or a missing, mistyped or unknown-named field.
absl::StatusOr<PromptEvalReport> ReportFromJson(std::string_view text);

// One line: "n=100 colour 1.000 shape 0.990 position 1.000 size 1.000 count 1.000 background
// 1.000 all 0.990".
std::string SummaryLine(const PromptEvalReport& report);

}  // namespace dartserve::eval

#endif  // DARTSERVE_EVAL_PROMPT_EVAL_H_
