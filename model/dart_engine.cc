#include "model/dart_engine.h"

#include <algorithm>
#include <exception>

#include "absl/strings/str_cat.h"
#include "model/image.h"

namespace dartserve::model {
namespace {

class DartRequest : public EngineRequest {
 public:
  explicit DartRequest(std::unique_ptr<GenerationState> state) : state_(std::move(state)) {}
  int steps_done() const override { return state_->steps_done(); }
  int total_steps() const override { return state_->total_steps(); }
  GenerationState* state() const { return state_.get(); }

 private:
  std::unique_ptr<GenerationState> state_;
};

}  // namespace

DartEngine::DartEngine(Dart model, ModelInfo info, SamplerOptions options)
    : sampler_(std::move(model), options), options_(options), info_(std::move(info)) {
  // A server-wide ODE step count is what requests that name none get.
  if (info_.default_flow_steps > 0 && options_.flow_steps > 0) {
    info_.default_flow_steps = options_.flow_steps;
  }
}

DartEngine::DartEngine(Dart model, SamplerOptions options)
    : DartEngine(model, DescribeModel(model), options) {}

absl::Status DartEngine::Validate(const GenerateParams& params) const {
  if (absl::Status s = CheckParams(params, info_); !s.ok()) return s;
  return sampler_.Validate(params);
}

int64_t DartEngine::KvBytes(const GenerateParams& params) const {
  const ModelConfig& c = sampler_.config();
  const int64_t per_row = options_.kv_cache ? c.kv_bytes_per_row() : c.condition_bytes_per_row();
  return per_row * (params.guidance_scale != 1.0f ? 2 : 1);
}

int DartEngine::Steps(const GenerateParams& params) const {
  return sampler_.config().generation_steps();
}

int64_t DartEngine::TokensPerStep(const GenerateParams& params) const {
  // dart_ar's first step feeds the K tokens of x_T; every later one a single token, which is what
  // the scheduler's token budget should plan for.
  return int64_t{sampler_.config().tokens_per_step()} * (params.guidance_scale != 1.0f ? 2 : 1);
}

absl::StatusOr<std::unique_ptr<EngineRequest>> DartEngine::Start(const GenerateParams& params) {
  absl::StatusOr<std::unique_ptr<GenerationState>> state = sampler_.Start(params);
  if (!state.ok()) return state.status();
  return std::make_unique<DartRequest>(*std::move(state));
}

absl::Status DartEngine::Step(std::span<EngineRequest* const> requests) {
  std::vector<GenerationState*> states;
  states.reserve(requests.size());
  for (EngineRequest* r : requests) states.push_back(static_cast<DartRequest*>(r)->state());
  return sampler_.Step(states);
}

absl::StatusOr<std::vector<Pixels>> DartEngine::Render(std::span<const RenderJob> jobs,
                                                       RenderKind kind) {
  std::vector<const GenerationState*> states;
  states.reserve(jobs.size());
  for (const RenderJob& job : jobs) {
    const GenerationState* state = static_cast<const DartRequest&>(*job.request).state();
    if (!state->x0().defined()) return absl::FailedPreconditionError("Render: no step has run yet");
    states.push_back(state);
  }
  const ModelConfig& c = sampler_.config();
  std::vector<Pixels> out;
  out.reserve(jobs.size());
  try {
    if (!c.latent()) {
      // A pixel model's x_0 is the image: one copy to contiguous CPU floats (none when it already
      // is), then plain loops, no kernel launches.
      for (size_t i = 0; i < jobs.size(); ++i) {
        const torch::Tensor x0 = states[i]->x0().to(torch::kCPU, torch::kFloat).contiguous();
        out.push_back(TokensToPixels({x0.data_ptr<float>(), static_cast<size_t>(x0.numel())},
                                     c.patch_size, c.channels, c.image_size, jobs[i].max_side));
      }
      return out;
    }
    // A latent model's images come from the autoencoder, all jobs in one call.
    const torch::Tensor images =
        sampler_.Images(states, kind).to(torch::kCPU, torch::kFloat).contiguous();
    const int size = c.pixel_size(), channels = c.pixel_channels();
    const size_t per_image = static_cast<size_t>(channels) * size * size;
    for (size_t i = 0; i < jobs.size(); ++i) {
      out.push_back(ImageToPixels({images.data_ptr<float>() + i * per_image, per_image}, channels,
                                  size, jobs[i].max_side));
    }
    return out;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("rendering images: ", e.what()));
  }
}

}  // namespace dartserve::model
