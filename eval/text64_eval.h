// Prompt adherence of a text model of the 64x64 scene world (data/scenes64.h), usually a latent
// one (docs/model.md, "Latent DART"): generate an image for every prompt (a latent model's
// sampler decodes it) and check it against what the prompt states (eval/scene64_eval.h).
#ifndef DARTSERVE_EVAL_TEXT64_EVAL_H_
#define DARTSERVE_EVAL_TEXT64_EVAL_H_

#include <torch/torch.h>

#include <vector>

#include "absl/status/statusor.h"
#include "data/scenes64.h"
#include "eval/eval.h"
#include "eval/scene64_eval.h"
#include "model/dart.h"

namespace dartserve::eval {

struct Text64EvalReport {
  Scene64Report adherence;        // results in prompt-major order (per_prompt per prompt)
  torch::Tensor images;           // [N, 3, 64, 64] in [-1, 1], the same order
  double generation_seconds = 0;  // sampling and decoding
  double images_per_second = 0;
};

// Generates options.per_prompt samples for each of `prompts` (sample j of prompt i with seed
// options.seed + i * per_prompt + j, as EvaluateTextModel) and checks each against its prompt's
// spec with the geometric shape classifier. INVALID_ARGUMENT for a model that is not
// text-conditioned or does not make 64x64 RGB images.
absl::StatusOr<Text64EvalReport> EvaluateTextModel64(
    model::Dart model, const std::vector<data::CaptionedScene64>& prompts,
    const TextEvalOptions& options);

}  // namespace dartserve::eval

#endif  // DARTSERVE_EVAL_TEXT64_EVAL_H_
