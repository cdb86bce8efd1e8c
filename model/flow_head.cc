#include "model/flow_head.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "model/layers.h"

namespace dartserve::model {
namespace nn = torch::nn;
namespace {

// Sinusoidal features of s in [0, 1] (scaled by 1000 like diffusion timesteps): [N] -> [N, dim].
torch::Tensor TimeFeatures(const torch::Tensor& s, int dim) {
  const int half = dim / 2;
  const torch::Tensor freqs =
      torch::exp(torch::arange(half, s.options()) * (-std::log(10000.0) / half));
  const torch::Tensor angles = (s * 1000.0).unsqueeze(-1) * freqs.unsqueeze(0);
  return torch::cat({torch::cos(angles), torch::sin(angles)}, -1);
}

}  // namespace

FlowHeadImpl::FlowHeadImpl(int cond_dim, int token_dim, int width, int depth) : width_(width) {
  const int64_t w = width;
  cond_proj_ = register_module("cond_proj", nn::Linear(cond_dim, w));
  in_proj_ = register_module("in_proj", nn::Linear(token_dim, w));
  time_proj_ = register_module("time_proj", nn::Linear(2 * (w / 2), w));
  ada_ = register_module("ada", nn::Linear(w, depth * 3 * w));
  for (int i = 0; i < depth; ++i) {
    fc1_.push_back(register_module(absl::StrCat("fc1_", i), nn::Linear(w, w)));
    fc2_.push_back(register_module(absl::StrCat("fc2_", i), nn::Linear(w, w)));
  }
  out_proj_ = register_module("out_proj", nn::Linear(w, token_dim));
  torch::NoGradGuard no_grad;
  // Blocks start as the identity (zero gates) and the velocity at zero, as in AdaLN-Zero.
  ada_->weight.zero_();
  ada_->bias.zero_();
  out_proj_->weight.zero_();
  out_proj_->bias.zero_();
}

torch::Tensor FlowHeadImpl::Modulation(const torch::Tensor& h) {
  const int64_t depth = static_cast<int64_t>(fc1_.size());
  // 1 + scale is folded in here, once per DART step, instead of in every ODE evaluation.
  const torch::Tensor one_plus_scale =
      torch::tensor({0.0f, 1.0f, 0.0f}, h.options()).view({1, 1, 3, 1});
  return ada_->forward(torch::silu(cond_proj_->forward(h))).view({h.size(0), depth, 3, width_}) +
         one_plus_scale;
}

torch::Tensor FlowHeadImpl::TimeEmbedding(const torch::Tensor& s) {
  return time_proj_->forward(TimeFeatures(s, 2 * (width_ / 2)));
}

torch::Tensor FlowHeadImpl::VelocityAt(const torch::Tensor& y, const torch::Tensor& time_embedding,
                                       const torch::Tensor& modulation) {
  torch::Tensor x = in_proj_->forward(y) + time_embedding;
  for (size_t i = 0; i < fc1_.size(); ++i) {
    const torch::Tensor m = modulation.select(1, static_cast<int64_t>(i));  // [N, 3, W]
    const torch::Tensor hidden = RmsNormalize(x, 1e-6) * m.select(1, 1) + m.select(1, 0);
    x = x + m.select(1, 2) * fc2_[i]->forward(torch::silu(fc1_[i]->forward(hidden)));
  }
  return out_proj_->forward(RmsNormalize(x, 1e-6));
}

torch::Tensor IntegrateFlow(
    const torch::Tensor& noise, int steps, FlowSolver solver,
    const std::function<torch::Tensor(const torch::Tensor&, double)>& velocity) {
  torch::Tensor y = noise;
  const double ds = 1.0 / steps;
  for (int i = 0; i < steps; ++i) {
    const double s = i * ds;
    const torch::Tensor v = velocity(y, s);
    // torch::add(a, b, alpha) is one kernel where a + alpha * b is two: small steps are
    // overhead-bound.
    if (solver == FlowSolver::kHeun && i + 1 < steps) {
      // Heun: average the slopes at both ends (the last step stays Euler: v at s = 1 is where the
      // flow ends, and skipping it saves one evaluation, as in EDM's sampler).
      const torch::Tensor v_end = velocity(torch::add(y, v, ds), s + ds);
      y = torch::add(y, v + v_end, 0.5 * ds);
    } else {
      y = torch::add(y, v, ds);
    }
  }
  return y;
}

}  // namespace dartserve::model
