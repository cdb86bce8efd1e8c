#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <map>

#include "absl/strings/str_cat.h"

namespace dartserve::model {

int64_t GenerationState::kv_bytes() const {
  return cond_cache_.bytes() + uncond_cache_.bytes() + cond_.bytes() + uncond_.bytes();
}

Sampler::Sampler(Dart model, SamplerOptions options)
    : model_(std::move(model)),
      info_(DescribeModel(model_)),
      options_(options),
      schedule_(model_->config()) {}

absl::Status Sampler::Validate(const GenerateParams& params) const {
  if (absl::Status s = CheckParams(params, info_); !s.ok()) return s;
  if (config().conditioning != Conditioning::kText) return absl::OkStatus();
  return EncodePrompts({&params.prompt, 1}).status();
}

absl::StatusOr<TextBatch> Sampler::EncodePrompts(std::span<const std::string> prompts) const {
  absl::StatusOr<TextBatch> ids = model_->EncodePrompts(prompts);
  if (!ids.ok()) {
    return absl::Status(ids.status().code(), absl::StrCat("prompt: ", ids.status().message()));
  }
  return ids;
}

absl::StatusOr<std::unique_ptr<GenerationState>> Sampler::Start(const GenerateParams& params) {
  // The prompt is checked where it is tokenized, below: once per request.
  if (absl::Status s = CheckParams(params, info_); !s.ok()) return s;
  const ModelConfig& config = model_->config();
  try {
    torch::NoGradGuard no_grad;
    auto state = std::unique_ptr<GenerationState>(new GenerationState());
    state->params_ = params;
    state->total_steps_ = config.generation_steps();
    state->generator_ = at::make_generator<at::CPUGeneratorImpl>(params.seed);
    const torch::TensorOptions options = model_->options();
    state->guided_ = params.guidance_scale != 1.0f;
    // Both branches' conditions in one call; the null branch is the null class or the empty
    // prompt.
    Condition both;
    if (config.conditioning == Conditioning::kText) {
      const std::string prompts[] = {params.prompt, std::string()};
      absl::StatusOr<TextBatch> ids = EncodePrompts({prompts, state->guided_ ? 2u : 1u});
      if (!ids.ok()) return ids.status();
      both = model_->TextCondition(*ids);
    } else {
      const bool class_model = config.conditioning == Conditioning::kClass;
      std::vector<int64_t> ids = {class_model ? params.class_id.value_or(config.null_class()) : 0};
      if (state->guided_) ids.push_back(config.null_class());
      both = model_->ClassCondition(torch::tensor(ids, torch::kLong));
    }
    state->cond_ = both.Slice(0, 1);
    if (state->guided_) state->uncond_ = both.Slice(1, 1);
    if (options_.kv_cache) {
      state->cond_cache_ = KvCache::Allocate(config, options);
      if (state->guided_) state->uncond_cache_ = KvCache::Allocate(config, options);
    }
    // Noise is drawn on the CPU from the request's generator so a seed gives the same image on
    // every device and in every batch.
    state->x_t_ = torch::randn({config.tokens_per_block(), config.token_dim()}, state->generator_,
                               torch::kFloat)
                      .to(options.device());
    return state;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("starting generation: ", e.what()));
  }
}

absl::Status Sampler::Step(std::span<GenerationState* const> states) {
  if (states.empty()) return absl::OkStatus();
  for (const GenerationState* s : states) {
    if (s->finished()) return absl::FailedPreconditionError("Step: state is already finished");
  }
  const ModelConfig& config = model_->config();
  try {
    // Inference mode skips autograd bookkeeping entirely: per-op overhead dominates small steps.
    c10::InferenceMode inference;
    const torch::Tensor features =
        options_.kv_cache ? PredictWithCache(states) : PredictByRecompute(states);
    const std::vector<torch::Tensor> x0s =
        config.flow() ? SampleFlow(states, features) : MeanX0(states, features);

    for (size_t i = 0; i < states.size(); ++i) {
      if (config.autoregressive()) {
        AdvanceToken(*states[i], x0s[i]);
      } else {
        AdvanceBlock(*states[i], x0s[i]);
      }
    }
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("denoising step failed: ", e.what()));
  }
}

void Sampler::AdvanceBlock(GenerationState& s, const torch::Tensor& x0) const {
  s.x0_ = x0;
  const int t = StepOfBlock(s.steps_done_, config().num_steps);  // the step just consumed
  ++s.steps_done_;
  s.x_t_ = t == 1 ? torch::Tensor() : Renoise(s, x0, t - 1);
}

void Sampler::AdvanceToken(GenerationState& s, const torch::Tensor& x0) const {
  const ModelConfig& c = config();
  const int64_t k = c.tokens_per_block();
  // The token just predicted: its raster position, and the noise level t of its block (the
  // blocks after x_T are x_{T-1} ... x_0).
  const int64_t position = s.steps_done_ % k;
  const int t = c.num_steps - 1 - static_cast<int>(s.steps_done_ / k);
  // x0_ keeps each position's latest estimate: positions not yet reached in this block still
  // show the previous block's, so previews sharpen token by token.
  if (!s.x0_.defined()) s.x0_ = torch::zeros({k, c.token_dim()}, x0.options());
  s.x0_[position].copy_(x0[0]);
  ++s.steps_done_;
  if (s.finished()) {
    s.x_t_ = torch::Tensor();
  } else {
    s.x_t_ = t == 0 ? x0 : Renoise(s, x0, t);  // the clean block is fed back as predicted
  }
}

torch::Tensor Sampler::Renoise(GenerationState& s, const torch::Tensor& x0, int t) const {
  const double a = schedule_.alpha(t);
  const torch::Tensor eps =
      torch::randn(x0.sizes(), s.generator_, torch::kFloat).to(x0.device()) * s.params_.temperature;
  return std::sqrt(a) * x0 + std::sqrt(1.0 - a) * eps;
}

torch::Tensor Sampler::PredictWithCache(std::span<GenerationState* const> states) {
  const int64_t predicted = model_->config().tokens_per_step();
  // Rows in Step() order; rows whose inputs have the same token count (all of them for dart; the
  // x_T block vs single tokens for dart_ar) share one forward.
  std::vector<const torch::Tensor*> inputs;
  std::vector<const Condition*> conds;
  std::vector<KvCache*> caches;
  for (GenerationState* s : states) {
    inputs.push_back(&s->x_t_);
    conds.push_back(&s->cond_);
    caches.push_back(&s->cond_cache_);
    if (s->guided_) {
      inputs.push_back(&s->x_t_);
      conds.push_back(&s->uncond_);
      caches.push_back(&s->uncond_cache_);
    }
  }
  std::map<int64_t, std::vector<size_t>> rows_by_length;
  for (size_t r = 0; r < inputs.size(); ++r) rows_by_length[inputs[r]->size(0)].push_back(r);
  std::vector<torch::Tensor> out(inputs.size());
  for (const auto& [length, rows] : rows_by_length) {
    std::vector<torch::Tensor> x;
    std::vector<const Condition*> group_conds;
    std::vector<KvCache*> group_caches;
    for (size_t r : rows) {
      x.push_back(*inputs[r]);
      group_conds.push_back(conds[r]);
      group_caches.push_back(caches[r]);
    }
    const torch::Tensor features =
        model_->ForwardStepFeatures(torch::stack(x), Condition::Cat(group_conds), group_caches)
            .narrow(1, length - predicted, predicted);
    if (rows_by_length.size() == 1) return features;
    for (size_t i = 0; i < rows.size(); ++i) out[rows[i]] = features[i];
  }
  return torch::stack(out);
}

std::vector<torch::Tensor> Sampler::MeanX0(std::span<GenerationState* const> states,
                                           const torch::Tensor& features) {
  const torch::Tensor x0_rows = model_->MeanHead(features);
  std::vector<torch::Tensor> out;
  int64_t row = 0;
  for (const GenerationState* s : states) {
    torch::Tensor x0 = x0_rows[row++];
    if (s->guided_) {
      const torch::Tensor x0_u = x0_rows[row++];
      x0 = x0_u + s->params_.guidance_scale * (x0 - x0_u);
    }
    out.push_back(x0);
  }
  return out;
}

int Sampler::FlowSteps(const GenerationState& state) const {
  if (state.params_.flow_steps > 0) return state.params_.flow_steps;
  return options_.flow_steps > 0 ? options_.flow_steps : model_->config().flow_steps;
}

std::vector<torch::Tensor> Sampler::SampleFlow(std::span<GenerationState* const> states,
                                               const torch::Tensor& features) {
  std::map<int, std::vector<size_t>> by_steps;  // ODE steps -> the states asking for them
  for (size_t i = 0; i < states.size(); ++i) by_steps[FlowSteps(*states[i])].push_back(i);
  if (by_steps.size() == 1) return SampleFlowGroup(states, features, by_steps.begin()->first);
  // Requests that ask for different step counts share the backbone pass; each count integrates
  // its own states' rows ([cond, (uncond)] per state). Every state draws its noise from its own
  // generator, so the split changes no image.
  std::vector<int64_t> first_row(states.size());
  for (int64_t i = 0, row = 0; i < static_cast<int64_t>(states.size()); ++i) {
    first_row[i] = row;
    row += states[i]->guided_ ? 2 : 1;
  }
  std::vector<torch::Tensor> out(states.size());
  for (const auto& [steps, members] : by_steps) {
    std::vector<GenerationState*> group;
    std::vector<int64_t> rows;
    for (size_t i : members) {
      group.push_back(states[i]);
      rows.push_back(first_row[i]);
      if (states[i]->guided_) rows.push_back(first_row[i] + 1);
    }
    const torch::Tensor index = torch::tensor(rows, torch::kLong).to(features.device());
    std::vector<torch::Tensor> sampled =
        SampleFlowGroup(group, features.index_select(0, index), steps);
    for (size_t j = 0; j < members.size(); ++j) out[members[j]] = std::move(sampled[j]);
  }
  return out;
}

std::vector<torch::Tensor> Sampler::SampleFlowGroup(std::span<GenerationState* const> states,
                                                    const torch::Tensor& features, int steps) {
  const ModelConfig& c = model_->config();
  const int64_t k = features.size(1), d = c.token_dim();  // k: tokens predicted per row
  const int64_t n_states = static_cast<int64_t>(states.size()), rows = features.size(0);
  // Rows are [cond, (uncond)] per state. Token-level index maps: which state's ODE state feeds
  // each row, and which rows give each state's conditional and unconditional velocity. An
  // unguided state uses its conditional row for both, so v_u + 1 * (v_c - v_u) is exactly v_c.
  std::vector<int64_t> row_state, cond_row, uncond_row;
  std::vector<float> scale;
  std::vector<torch::Tensor> noise;
  int64_t row = 0;
  for (int64_t i = 0; i < n_states; ++i) {
    GenerationState* s = states[i];
    cond_row.push_back(row++);
    row_state.push_back(i);
    if (s->guided_) {
      uncond_row.push_back(row++);
      row_state.push_back(i);
    } else {
      uncond_row.push_back(cond_row.back());
    }
    scale.push_back(s->guided_ ? s->params_.guidance_scale : 1.0f);
    // The head's starting noise comes from the request's own generator (batch invariance);
    // temperature scales it, as in MAR's diffusion head.
    noise.push_back(torch::randn({k, d}, s->generator_, torch::kFloat) * s->params_.temperature);
  }
  const torch::Device device = features.device();
  const auto tokens = [&](const std::vector<int64_t>& idx) {
    const torch::Tensor base = torch::tensor(idx, torch::kLong).mul(k).unsqueeze(1);
    return (base + torch::arange(k, torch::kLong).unsqueeze(0)).view({-1}).to(device);
  };
  const torch::Tensor row_src = tokens(row_state), c_idx = tokens(cond_row),
                      u_idx = tokens(uncond_row);
  const torch::Tensor w =
      torch::tensor(scale, torch::kFloat).repeat_interleave(k).unsqueeze(1).to(device);
  FlowHead& head = model_->flow_head();
  const torch::Tensor modulation = head->Modulation(features.reshape({rows * k, -1}));
  const FlowSolver solver = options_.flow_solver.value_or(c.flow_solver);
  // The solvers only evaluate at s = i / steps: embed that grid once for the whole step.
  const torch::Tensor times =
      head->TimeEmbedding(torch::arange(steps + 1, features.options()) / steps);
  const auto time_at = [&](double s) {
    return times.narrow(0, static_cast<int64_t>(std::lround(s * steps)), 1);
  };
  const bool any_guided = rows > n_states;
  const auto velocity = [&](const torch::Tensor& y, double s) {
    // Without a guided state every row is its state's conditional row: no gathers.
    if (!any_guided) return head->VelocityAt(y, time_at(s), modulation);
    const torch::Tensor v = head->VelocityAt(y.index_select(0, row_src), time_at(s), modulation);
    const torch::Tensor v_c = v.index_select(0, c_idx), v_u = v.index_select(0, u_idx);
    return v_u + w * (v_c - v_u);
  };
  const torch::Tensor y = IntegrateFlow(torch::stack(noise).view({n_states * k, d}).to(device),
                                        steps, solver, velocity);
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < n_states; ++i) out.push_back(y.narrow(0, i * k, k));
  return out;
}

torch::Tensor Sampler::PredictByRecompute(std::span<GenerationState* const> states) {
  const int64_t predicted = model_->config().tokens_per_step();
  std::vector<torch::Tensor> rows;
  for (GenerationState* s : states) {
    s->trajectory_.push_back(s->x_t_);
    torch::Tensor prefix = torch::cat(s->trajectory_).unsqueeze(0);  // [1, n * K, d]
    std::vector<const Condition*> conds = {&s->cond_};
    if (s->guided_) {
      prefix = prefix.expand({2, -1, -1});
      conds.push_back(&s->uncond_);
    }
    const torch::Tensor out = model_->ForwardFeatures(prefix, Condition::Cat(conds));
    const torch::Tensor last = out.narrow(1, out.size(1) - predicted, predicted);
    for (int64_t r = 0; r < last.size(0); ++r) rows.push_back(last[r]);
  }
  return torch::stack(rows);
}

absl::StatusOr<torch::Tensor> Sampler::Generate(const GenerateParams& params) {
  absl::StatusOr<std::unique_ptr<GenerationState>> state = Start(params);
  if (!state.ok()) return state.status();
  GenerationState* s = state->get();
  while (!s->finished()) {
    if (absl::Status st = Step({&s, 1}); !st.ok()) return st;
  }
  return Image(*s);
}

absl::StatusOr<torch::Tensor> Sampler::GenerateBatch(std::span<const GenerateParams> params,
                                                     int max_batch) {
  std::vector<torch::Tensor> images;
  const size_t batch = std::max(1, max_batch);
  for (size_t first = 0; first < params.size(); first += batch) {
    std::vector<std::unique_ptr<GenerationState>> owned;
    std::vector<GenerationState*> states;
    for (size_t i = first; i < std::min(params.size(), first + batch); ++i) {
      absl::StatusOr<std::unique_ptr<GenerationState>> s = Start(params[i]);
      if (!s.ok()) return s.status();
      states.push_back(s->get());
      owned.push_back(*std::move(s));
    }
    while (!states.front()->finished()) {
      if (absl::Status st = Step(states); !st.ok()) return st;
    }
    const std::vector<const GenerationState*> finished(states.begin(), states.end());
    images.push_back(Images(finished));
  }
  if (images.empty()) return absl::InvalidArgumentError("GenerateBatch: no requests");
  return torch::cat(images);
}

torch::Tensor Sampler::Images(std::span<const GenerationState* const> states,
                              RenderKind kind) const {
  const ModelConfig& c = model_->config();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> x0;
  x0.reserve(states.size());
  for (const GenerationState* s : states) x0.push_back(s->x0());
  const torch::Tensor grid = Unpatchify(torch::stack(x0), c.patch_size, c.channels, c.image_size);
  if (!c.latent()) return grid.clamp(-1, 1);
  // A latent model's x_0 is a normalized latent (docs/model.md, "Latent DART").
  Autoencoder autoencoder = model_->autoencoder();
  const torch::Tensor images = kind == RenderKind::kDecoded
                                   ? autoencoder->Decode(autoencoder->Denormalize(grid))
                                   : autoencoder->PreviewImage(grid, PreviewUpsample::kNearest);
  return images.clamp(-1, 1);
}

torch::Tensor Sampler::Image(const GenerationState& state) const {
  const GenerationState* s = &state;
  return Images({&s, 1})[0];
}

}  // namespace dartserve::model
