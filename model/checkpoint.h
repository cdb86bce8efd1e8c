// Checkpoint folders: `config.json` (ModelConfig) + `model.safetensors` (the weights), and for
// text models `tokenizer.model` (model/text/tokenizer.h), which is loaded with them and attached to
// the model, so a text checkpoint cannot be served with a tokenizer it was not trained with.
// Latent models (docs/model.md, "Latent DART") carry their autoencoder the same way, as the
// subfolder `autoencoder/` (an autoencoder checkpoint, model/autoencoder.h) that config.json names.
//
// Loading checks every tensor against the model the config builds: a missing, unexpected or
// wrongly shaped tensor is an error naming it, so a checkpoint either loads completely or not at
// all. F16 and BF16 weights are widened to fp32 on load.
#ifndef DARTSERVE_MODEL_CHECKPOINT_H_
#define DARTSERVE_MODEL_CHECKPOINT_H_

#include <torch/torch.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/dart.h"
#include "model/safetensors.h"

namespace dartserve::model {

inline constexpr char kConfigFile[] = "config.json";
inline constexpr char kWeightsFile[] = "model.safetensors";
inline constexpr char kClassNamesFile[] = "classes.txt";
// Text models: prompts that show what the model can draw, one per line (ModelInfo).
inline constexpr char kExamplePromptsFile[] = "prompts.txt";
inline constexpr int kMaxExamplePrompts = 16;
// Conditional models: how the checkpoint is served by default, {"guidance": g}. Guidance is the
// one sampling choice whose best value differs most between models (docs/quality.md).
inline constexpr char kServingFile[] = "serving.json";
// A conditional model's default guidance when its checkpoint has no serving.json.
inline constexpr float kDefaultGuidance = 2.0f;

// Copies the file's tensors into `module`'s parameters (names as in named_parameters()).
absl::Status LoadWeights(torch::nn::Module& module, const SafetensorsFile& file);

// Parameters of `module` as tensors to write, converted to `dtype`.
std::vector<TensorToWrite> WeightsToWrite(const torch::nn::Module& module, DType dtype);

// Reads `dir`/config.json and `dir`/model.safetensors into a new model in eval mode on the CPU.
// Errors are prefixed with the offending file. A latent model's config.json must name its
// autoencoder as kCheckpointAutoencoder; `dir`/autoencoder is loaded (eval mode, CPU, no
// gradients), checked with CheckLatentGeometry and attached (Dart::autoencoder()). A missing or
// unloadable autoencoder folder, or one that does not fit, is an error naming the folder.
absl::StatusOr<Dart> LoadCheckpoint(const std::string& dir);

// OK when `autoencoder` makes the latents `config` (a latent model) denoises: latent_channels ==
// channels, latent_size() == image_size (the latent grid), downsample_factor() ==
// autoencoder_downsample and channels == pixel_channels(). Else INVALID_ARGUMENT naming the first
// mismatch with both values.
absl::Status CheckLatentGeometry(const ModelConfig& config, const AutoencoderConfig& autoencoder);

// DescribeModel(model) plus the class names in `dir`/classes.txt (one per line, index = class
// id), a text model's example prompts in `dir`/prompts.txt (one per line), and a conditional
// model's default guidance from `dir`/serving.json (else kDefaultGuidance; 1 for unconditional
// models), when those files exist. INVALID_ARGUMENT naming the file when classes.txt does not
// hold exactly num_classes names, prompts.txt holds more than kMaxExamplePrompts prompts, a
// prompt over limits.max_prompt_bytes, or belongs to a model that takes no prompt, or
// serving.json is not an object of known fields, its guidance not in (0, limits.max_guidance],
// or it belongs to an unconditional model.
absl::StatusOr<ModelInfo> DescribeCheckpoint(const std::string& dir, const Dart& model);

// Writes `dir`/config.json and `dir`/model.safetensors (creating `dir`), each atomically, and the
// model's tokenizer for text models (FAILED_PRECONDITION when a text model has none). A latent
// model's autoencoder is written to `dir`/autoencoder (SaveAutoencoder, in `dtype` too) and
// config.json names it there (kCheckpointAutoencoder), whatever the model's config says;
// FAILED_PRECONDITION when a latent model has no autoencoder or one that does not fit. config.json
// is written last.
absl::Status SaveCheckpoint(const std::string& dir, Dart& model, DType dtype = DType::kF32);

// Tensor <-> safetensors bytes.
torch::Tensor TensorFromBytes(const TensorInfo& info, std::string_view bytes);
TensorToWrite TensorToBytes(const std::string& name, const torch::Tensor& tensor, DType dtype);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_CHECKPOINT_H_
