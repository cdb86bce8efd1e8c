#include "model/layers.h"

#include <cmath>

#include "model/torch_compat.h"

namespace dartserve::model {

namespace nn = torch::nn;

RmsNormImpl::RmsNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight_ = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RmsNormImpl::forward(const torch::Tensor& x) {
  const torch::Tensor xf = x.to(torch::kFloat);
  const torch::Tensor normed = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return (normed * weight_).to(x.scalar_type());
}

Rope2d::Rope2d(const ModelConfig& config) {
  const int64_t grid = config.grid();
  const int64_t quarter = config.head_dim() / 4;  // rotation pairs per axis
  // freq_i = theta^(-i / quarter): the lowest frequency spans the grid many times over at the
  // small theta the configs use, so positions stay distinguishable.
  const torch::Tensor freqs = torch::pow(
      config.rope_theta, -torch::arange(quarter, torch::kDouble) / static_cast<double>(quarter));
  const torch::Tensor idx = torch::arange(grid * grid, torch::kLong);
  const torch::Tensor rows = (idx / grid).to(torch::kDouble).unsqueeze(1);  // floor: non-negative
  const torch::Tensor cols = (idx % grid).to(torch::kDouble).unsqueeze(1);
  const torch::Tensor angles = torch::cat({rows * freqs, cols * freqs}, 1);  // [K, head_dim / 2]
  cos_ = torch::cos(angles).to(torch::kFloat);
  sin_ = torch::sin(angles).to(torch::kFloat);
}

torch::Tensor Rope2d::Apply(const torch::Tensor& x, const torch::Tensor& positions) const {
  const torch::Tensor c = cos_.to(x.device()).index_select(0, positions.to(x.device()));
  const torch::Tensor s = sin_.to(x.device()).index_select(0, positions.to(x.device()));
  auto sizes = x.sizes().vec();
  sizes.back() /= 2;
  sizes.push_back(2);
  const torch::Tensor pairs = x.reshape(sizes);  // [..., N, head_dim / 2, 2]
  const torch::Tensor x0 = pairs.select(-1, 0);
  const torch::Tensor x1 = pairs.select(-1, 1);
  const torch::Tensor c_ = c.to(x.scalar_type());
  const torch::Tensor s_ = s.to(x.scalar_type());
  return torch::stack({x0 * c_ - x1 * s_, x0 * s_ + x1 * c_}, -1).flatten(-2);
}

torch::Tensor Modulate(const torch::Tensor& x, const torch::Tensor& shift,
                       const torch::Tensor& scale) {
  return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1);
}

DartBlockImpl::DartBlockImpl(const ModelConfig& config)
    : heads_(config.heads), head_dim_(config.head_dim()) {
  const int64_t d = config.width;
  const int64_t hidden = config.mlp_hidden();
  norm1_ = register_module("norm1", RmsNorm(d));
  norm2_ = register_module("norm2", RmsNorm(d));
  q_norm_ = register_module("q_norm", RmsNorm(head_dim_));
  k_norm_ = register_module("k_norm", RmsNorm(head_dim_));
  qkv_ = register_module("qkv", nn::Linear(nn::LinearOptions(d, 3 * d).bias(false)));
  proj_ = register_module("proj", nn::Linear(nn::LinearOptions(d, d).bias(false)));
  w_gate_up_ =
      register_module("w_gate_up", nn::Linear(nn::LinearOptions(d, 2 * hidden).bias(false)));
  w_down_ = register_module("w_down", nn::Linear(nn::LinearOptions(hidden, d).bias(false)));
  ada_ = register_module("ada", nn::Linear(nn::LinearOptions(d, 6 * d)));
  // AdaLN-Zero: every block starts as the identity, which keeps deep stacks stable early on.
  torch::NoGradGuard no_grad;
  ada_->weight.zero_();
  ada_->bias.zero_();
}

torch::Tensor DartBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cond,
                                     const Rope2d& rope, const torch::Tensor& positions,
                                     const AttendFn& attend) {
  const int64_t r = x.size(0);
  const int64_t n = x.size(1);
  const std::vector<torch::Tensor> mod = ada_->forward(cond).chunk(6, -1);

  // Attention.
  const torch::Tensor h = Modulate(norm1_->forward(x), mod[0], mod[1]);
  const torch::Tensor qkv = qkv_->forward(h).view({r, n, 3, heads_, head_dim_}).permute({2, 0, 3, 1, 4});
  const torch::Tensor q = rope.Apply(q_norm_->forward(qkv[0]), positions);
  const torch::Tensor k = rope.Apply(k_norm_->forward(qkv[1]), positions);
  const torch::Tensor attn = attend(q, k, qkv[2]);  // [R, H, N, hd]
  const torch::Tensor attn_out = proj_->forward(attn.transpose(1, 2).reshape({r, n, -1}));
  const torch::Tensor y = x + mod[2].unsqueeze(1) * attn_out;

  // SwiGLU MLP.
  const torch::Tensor h2 = Modulate(norm2_->forward(y), mod[3], mod[4]);
  const std::vector<torch::Tensor> gate_up = w_gate_up_->forward(h2).chunk(2, -1);
  const torch::Tensor mlp = w_down_->forward(torch::silu(gate_up[0]) * gate_up[1]);
  return y + mod[5].unsqueeze(1) * mlp;
}

}  // namespace dartserve::model
