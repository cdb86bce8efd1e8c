// The DART-FM flow head (docs/model.md, "Flow head"; after MAR's per-token diffusion head).
//
// A small per-token MLP that turns the backbone's output h_i for token i into a *sample* of that
// token's x_0 patch instead of the mean an MSE head predicts. Rectified flow from noise to data:
//   y_s = s * x_0 + (1 - s) * eps,  v* = x_0 - eps,  loss = || v(y_s, s, h_i) - v* ||^2,
// and sampling integrates dy/ds = v from y_0 = eps (s = 0) to s = 1 (Euler or Heun).
// Tokens of one block interact only through h: the head has no cross-token terms.
//
// Layout: y -> in_proj + time embedding -> `flow_depth` residual MLP blocks, each modulated
// (AdaLN shift/scale/gate) by h -> out_proj. The modulation depends on h only, so it is computed
// once per DART step (Modulation) and reused by every ODE evaluation (Velocity).
#ifndef DARTSERVE_MODEL_FLOW_HEAD_H_
#define DARTSERVE_MODEL_FLOW_HEAD_H_

#include <torch/torch.h>

#include <functional>
#include <vector>

#include "model/config.h"

namespace dartserve::model {

class FlowHeadImpl : public torch::nn::Module {
 public:
  explicit FlowHeadImpl(const ModelConfig& config)
      : FlowHeadImpl(config.width, config.token_dim(), config.flow_width, config.flow_depth) {}
  // `cond_dim`: width of the conditioning vectors h; `token_dim`: size of a sample.
  FlowHeadImpl(int cond_dim, int token_dim, int width, int depth);

  // h: [N, width] backbone outputs -> per-block modulations [N, flow_depth, 3, flow_width]
  // (shift, 1 + scale, gate).
  torch::Tensor Modulation(const torch::Tensor& h);
  // s: [M] flow times in [0, 1] -> their embeddings [M, flow_width].
  torch::Tensor TimeEmbedding(const torch::Tensor& s);
  // y: [N, token_dim], s: [N] or [1] flow times in [0, 1], modulation from Modulation().
  // Returns the velocity [N, token_dim].
  torch::Tensor Velocity(const torch::Tensor& y, const torch::Tensor& s,
                         const torch::Tensor& modulation) {
    return VelocityAt(y, TimeEmbedding(s), modulation);
  }
  // The same with the time embedding ([N] or [1] rows) precomputed: a sampler embeds its whole
  // time grid once per step instead of once per ODE evaluation.
  torch::Tensor VelocityAt(const torch::Tensor& y, const torch::Tensor& time_embedding,
                           const torch::Tensor& modulation);

 private:
  int width_;
  torch::nn::Linear cond_proj_{nullptr};  // backbone width -> flow width
  torch::nn::Linear in_proj_{nullptr};    // token_dim -> flow width
  torch::nn::Linear time_proj_{nullptr};  // sinusoidal(s) -> flow width
  torch::nn::Linear ada_{nullptr};        // flow width -> depth * 3 * flow width (zero-init)
  std::vector<torch::nn::Linear> fc1_, fc2_;
  torch::nn::Linear out_proj_{nullptr};  // zero-init
};
TORCH_MODULE(FlowHead);

// Integrates the head's flow from `noise` (s = 0) to s = 1 in `steps` steps. `velocity(y, s)`
// returns dy/ds for the batch at time s (it applies guidance when the caller wants it).
torch::Tensor IntegrateFlow(
    const torch::Tensor& noise, int steps, FlowSolver solver,
    const std::function<torch::Tensor(const torch::Tensor&, double)>& velocity);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_FLOW_HEAD_H_
