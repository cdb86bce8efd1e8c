// What a served model is and what it accepts, torch-free: the one place that owns a request's
// parameter ranges. The server validates API requests against it and the scheduler and engine
// check the same ranges with the same function, so a limit cannot differ between layers.
//
// A model describes itself (DescribeModel in model/dart_engine.h builds a ModelInfo from a
// checkpoint's config); the server only adds what it decides (the default guidance).
#ifndef DARTSERVE_MODEL_MODEL_INFO_H_
#define DARTSERVE_MODEL_MODEL_INFO_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dartserve::model {

// What a model is conditioned on. The config file spells these "none", "class" and "text"; the
// API reports ConditioningName().
enum class Conditioning { kNone, kClass, kText };

// "unconditional", "class" or "text", as ListModels reports them.
absl::string_view ConditioningName(Conditioning conditioning);

// What a request asks the model for. Checked by CheckParams (and Engine::Validate).
struct GenerateParams {
  // Class id in [0, num_classes) for class models; nullopt: unconditional (the null class).
  // Must be nullopt for text and unconditional models.
  std::optional<int> class_id;
  // The prompt, for text models; empty: unconditional (the null branch of guidance). Must be
  // empty for other models. Its length in tokens is checked where it is tokenized.
  std::string prompt;
  uint64_t seed = 0;
  // Classifier-free guidance weight w; 1 disables guidance (no unconditional branch is run).
  float guidance_scale = 1.0f;
  // Scales every noise the sampler draws: each re-noising step's fresh noise and a flow head's
  // starting noise (docs/model.md, "Flow head"); 1 is the model's distribution.
  float temperature = 1.0f;
  // Flow-head models: ODE steps per DART step, in [1, ParamLimits::max_flow_steps]; 0: the
  // model's default (ModelInfo::default_flow_steps). Must be 0 for other models. Trades quality
  // for latency per request; requests with different values share a batch.
  int flow_steps = 0;
};

// How an image is made from a request's x_0 estimate (Engine::Render). Pixel models render both
// kinds the same way; latent models (docs/model.md, "Latent DART") differ in cost and fidelity.
enum class RenderKind {
  // The autoencoder's fitted linear latent-to-RGB map, upsampled to the image size: near-free,
  // a blurred estimate of the decoded image. The default for previews.
  kLinear,
  // The autoencoder's full decoder: what final images always use, and previews on request.
  kDecoded,
};

// The ranges a model accepts. Closed intervals unless noted.
struct ParamLimits {
  float max_guidance = 20.0f;       // guidance_scale in [0, max_guidance]
  float max_temperature = 2.0f;     // temperature in (0, max_temperature]
  int64_t max_prompt_bytes = 2000;  // checked before tokenizing, so tokenizing stays cheap
  int max_flow_steps = 32;          // flow_steps in [0, max_flow_steps] (flow-head models)
};

struct ModelInfo {
  Conditioning conditioning = Conditioning::kClass;
  int num_classes = 0;                   // 0 unless conditioning is kClass
  std::vector<std::string> class_names;  // index = class id; empty or num_classes names
  // The served image (for a latent model, the decoded image, not its latent grid).
  int image_size = 0;
  int channels = 0;
  // Denoises an autoencoder's latents; previews are then linear (or decoded) latent previews.
  bool latent = false;
  // Denoising steps T: the only value a request's `steps` may name.
  int denoising_steps = 0;
  // Model calls per image, which is what progress counts (one Progress message each, and the
  // unit of the preview cadence): T, or T x tokens per block for token-level DART-AR.
  int progress_steps = 0;
  float default_guidance = 1.0f;  // for requests that give none; 1 for unconditional models
  // Flow-head models: the ODE steps per DART step of requests that give none; 0: the model has
  // no flow head (a request's flow_steps must then be 0).
  int default_flow_steps = 0;
  int64_t parameters = 0;
  ParamLimits limits;
  // Text models: prompts that show what the model draws (for a client's help or a page's
  // placeholder); may be empty.
  std::vector<std::string> example_prompts;
};

// OK, or INVALID_ARGUMENT naming the field of `params` that `model` cannot serve: the condition
// against the model's conditioning and classes, guidance and temperature against its limits,
// the prompt's byte length. (The prompt's length in tokens is the tokenizer's to check.)
absl::Status CheckParams(const GenerateParams& params, const ModelInfo& model);

// OK, or INVALID_ARGUMENT "guidance: must be in (0, max]": a conditional model's default
// guidance (a checkpoint's serving.json, or the server's --guidance) against its limits. Unlike a
// request's, a default may not be 0, which would serve the unconditional model.
absl::Status CheckDefaultGuidance(double guidance, const ParamLimits& limits);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_MODEL_INFO_H_
