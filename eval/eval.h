// Sample-quality evaluation.
// - Class-conditional checkpoints, with the shipped Fashion-MNIST classifier: conditional accuracy
//   (fraction of class-c samples classified as c) and FID on the classifier's penultimate features
//   against a reference set (the Fashion-MNIST test split).
// - Text checkpoints on the procedural shapes (GenEval-style prompt adherence): each prompt's
//   samples are analysed (eval/prompt_eval.h) and checked for colour, shape, position, size and
//   object count.
#ifndef DARTSERVE_EVAL_EVAL_H_
#define DARTSERVE_EVAL_EVAL_H_

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "data/shapes.h"
#include "eval/classifier.h"
#include "eval/prompt_eval.h"
#include "model/dart.h"

namespace dartserve::eval {

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

struct TextEvalOptions {
  int per_prompt = 1;           // samples per prompt
  float guidance_scale = 2.0f;  // the served default
  float temperature = 1.0f;
  uint64_t seed = 0;   // sample j of prompt i uses seed + i * per_prompt + j
  int batch = 100;     // requests stepped together
  int flow_steps = 0;  // flow head: ODE steps per DART step (0: the model config's)
};

// Images generated for an evaluation, prompt-major, with the time they took (first step to last
// image, decoding included).
struct TimedImages {
  torch::Tensor images;  // [N, C, H, W] in [-1, 1]: the model's images (latent models: decoded)
  double seconds = 0;
};

// OK when `config` is a text model of size x size RGB images; else INVALID_ARGUMENT saying what
// prompt evaluation needs (`images`, e.g. "32x32 RGB images (the shapes world)").
absl::Status CheckTextModel(const model::ModelConfig& config, int size, const std::string& images);

// Both text evaluations' generation: options.per_prompt samples of each of `texts` (sample j of
// text i with seed options.seed + i * per_prompt + j), options.batch stepped together.
// INVALID_ARGUMENT for per_prompt < 1.
absl::StatusOr<TimedImages> SamplePrompts(model::Dart model, const std::vector<std::string>& texts,
                                          const TextEvalOptions& options);

struct TextEvalReport {
  PromptEvalReport adherence;  // results in prompt-major order (per_prompt per prompt)
  torch::Tensor images;        // [N, 3, 32, 32] in [-1, 1], the same order
  double generation_seconds = 0;
  double images_per_second = 0;
};

// Generates `per_prompt` samples for each of `prompts` with a text model of the shapes world and
// checks each against its prompt with `classifier` deciding shapes (LearnedShapeClassifier).
absl::StatusOr<TextEvalReport> EvaluateTextModel(model::Dart model,
                                                 const std::vector<data::Prompt>& prompts,
                                                 const ShapeClassifier& classifier,
                                                 const TextEvalOptions& options);

}  // namespace dartserve::eval

#endif  // DARTSERVE_EVAL_EVAL_H_
