// Sampling API: per-request generation state and a batched step over states at different steps.
//
// A request's state owns everything that is its alone: its KV caches (one per guidance branch,
// preallocated to the whole trajectory), its RNG (so its image depends only on its seed and
// parameters, never on its batch mates), its step index and its latest x_0 estimate (the preview).
//
//   Sampler sampler(model);
//   auto state = sampler.Start({.class_id = 3, .seed = 42, .guidance_scale = 2.0f});
//   // (a text model: .prompt = "a small red circle at the top left on a white background")
//   while (!(*state)->finished()) sampler.Step({state->get()});   // any mix of states
//   torch::Tensor image = sampler.Image(**state);                  // [C, H, W] in [-1, 1]
//
// Reverse step (docs/model.md, "Sampling"): x_{t-1} = sqrt(a_{t-1}) x0 + sqrt(1 - a_{t-1}) eps,
// with fresh noise scaled by the temperature. Classifier-free guidance feeds the conditional and
// the null-condition row the same trajectory, each with its own cache, and combines x0 = x0_u + w
// (x0_c - x0_u). The unconditional row is only run when w != 1. A state's conditions (for text: the
// encoded prompt and the empty prompt, with every layer's cross-attention K/V) are computed once in
// Start() and reused at every step. With a flow head, x0 is instead sampled per token by
// integrating the head's velocity from noise, with guidance v = v_u + w (v_c - v_u) applied at
// every ODE evaluation.
//
// Thread-compatibility: a Sampler and the states it steps are used by one thread at a time (the
// engine's worker thread owns every torch call).
#ifndef DARTSERVE_MODEL_SAMPLER_H_
#define DARTSERVE_MODEL_SAMPLER_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/dart.h"
#include "model/schedule.h"

namespace dartserve::model {

struct SamplerOptions {
  // true: each step runs only the new block against the request's KV cache (DART's AR property).
  // false: each step recomputes the whole prefix x_{t:T} with the teacher-forced forward; no KV
  // memory is held. Same results; kept as the baseline the cache is measured against.
  bool kv_cache = true;
  // Flow head only: ODE steps and solver per DART step (0 / nullopt: the config's).
  int flow_steps = 0;
  std::optional<FlowSolver> flow_solver;
};

class GenerationState {
 public:
  int steps_done() const { return steps_done_; }
  int total_steps() const { return total_steps_; }
  bool finished() const { return steps_done_ == total_steps_; }
  bool guided() const { return guided_; }
  const GenerateParams& params() const { return params_; }
  // The tokens the next step consumes ([N, token_dim]: a noisy block for dart; the x_T block, then
  // the single token last sampled, for dart_ar); undefined once finished.
  const torch::Tensor& next_input() const { return x_t_; }
  // The latest x_0 estimate in token space [K, token_dim] (for dart_ar, each position's latest
  // token prediction); undefined before the first step. The final image once finished.
  const torch::Tensor& x0() const { return x0_; }
  // KV memory this state holds (all branches, their conditions included), fixed from Start() to
  // destruction: ModelConfig::kv_bytes_per_row() per branch (condition_bytes_per_row() without
  // the KV cache).
  int64_t kv_bytes() const;

 private:
  friend class Sampler;
  GenerationState() = default;

  GenerateParams params_;
  Condition cond_;    // one row: the request's condition
  Condition uncond_;  // one row: the null class or empty prompt; only when guided
  int steps_done_ = 0;
  int total_steps_ = 0;
  bool guided_ = false;
  torch::Generator generator_;
  KvCache cond_cache_;    // empty without a KV cache
  KvCache uncond_cache_;  // empty unless guided
  torch::Tensor x_t_;
  torch::Tensor x0_;
  std::vector<torch::Tensor> trajectory_;  // inputs so far; only without a KV cache
};

class Sampler {
 public:
  // `model` is shared, not copied; it must outlive the sampler.
  explicit Sampler(Dart model, SamplerOptions options = {});

  const ModelConfig& config() const { return model_->config(); }
  // DescribeModel(model): the conditioning and limits Validate and Start check against.
  const ModelInfo& info() const { return info_; }
  const NoiseSchedule& schedule() const { return schedule_; }

  // OK, or INVALID_ARGUMENT naming the field of `params` this model cannot serve: CheckParams
  // against info(), then the prompt's length in tokens.
  absl::Status Validate(const GenerateParams& params) const;

  // Checks `params` (as Validate), computes its conditions, allocates the request's KV caches at
  // their peak size and draws x_T from the request's own generator.
  absl::StatusOr<std::unique_ptr<GenerationState>> Start(const GenerateParams& params);

  // Advances every state by one denoising step in one batched forward. States may be at
  // different steps and have different parameters; finished states are an error. On error
  // (INTERNAL for a torch failure) the states' contents are unspecified and they should be dropped.
  absl::Status Step(std::span<GenerationState* const> states);

  // Convenience: runs one request to completion and returns its image [C, H, W] in [-1, 1].
  absl::StatusOr<torch::Tensor> Generate(const GenerateParams& params);

  // Runs many requests to completion, `max_batch` at a time; returns images [N, C, H, W] in
  // [-1, 1] (latent models: decoded, one decoder call per batch).
  absl::StatusOr<torch::Tensor> GenerateBatch(std::span<const GenerateParams> params,
                                              int max_batch);

  // The images [B, C, H, W] in [-1, 1] (the served image's geometry: pixel_size(),
  // pixel_channels()) for the states' latest x_0 estimates (previews until finished), in one
  // batched call: a pixel model's x_0 as it is (`kind` makes no difference), a latent model's
  // decoded (kDecoded) or mapped by the autoencoder's linear preview map (kLinear). Every state
  // must have stepped at least once. Throws c10::Error on a LibTorch failure.
  torch::Tensor Images(std::span<const GenerationState* const> states,
                       RenderKind kind = RenderKind::kDecoded) const;
  // Images({&state})[0].
  torch::Tensor Image(const GenerationState& state) const;

 private:
  // The model's EncodePrompts, with errors naming the `prompt` field.
  absl::StatusOr<TextBatch> EncodePrompts(std::span<const std::string> prompts) const;
  // Backbone features [rows, tokens_per_step, width] at the positions that predict each state's
  // next block (dart) or token (dart_ar), in the row order of Step()
  // (per state: the conditional row, then the unconditional row when guided).
  torch::Tensor PredictWithCache(std::span<GenerationState* const> states);
  torch::Tensor PredictByRecompute(std::span<GenerationState* const> states);
  // Each state's guided x_0 estimate [tokens_per_step, d] from the features: the mean head's
  // prediction, or a sample of the flow head (guidance on the velocity; docs/model.md, "Flow
  // head").
  std::vector<torch::Tensor> MeanX0(std::span<GenerationState* const> states,
                                    const torch::Tensor& features);
  std::vector<torch::Tensor> SampleFlow(std::span<GenerationState* const> states,
                                        const torch::Tensor& features);
  // SampleFlow for states that all integrate with `steps` ODE steps; `features` holds their rows.
  std::vector<torch::Tensor> SampleFlowGroup(std::span<GenerationState* const> states,
                                             const torch::Tensor& features, int steps);
  // The ODE steps `state` integrates with: its request's, else the sampler's, else the config's.
  int FlowSteps(const GenerationState& state) const;
  // Moves a state past the step that produced `x0` ([tokens_per_step, d]): the next noisy block
  // (dart), or the next token (dart_ar).
  void AdvanceBlock(GenerationState& s, const torch::Tensor& x0) const;
  void AdvanceToken(GenerationState& s, const torch::Tensor& x0) const;
  // sqrt(a_t) x0 + sqrt(1 - a_t) eps, eps from the state's generator scaled by its temperature.
  torch::Tensor Renoise(GenerationState& s, const torch::Tensor& x0, int t) const;

  Dart model_;
  ModelInfo info_;
  SamplerOptions options_;
  NoiseSchedule schedule_;
};

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_SAMPLER_H_
