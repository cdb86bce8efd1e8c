#include "model/layers.h"

#include <cmath>

#include "model/fused_cpu.h"
#include "model/torch_compat.h"

namespace dartserve::model {

namespace nn = torch::nn;

torch::Tensor RmsNormalize(const torch::Tensor& x, double eps) {
  if (x.scalar_type() == torch::kFloat) {
    return x * (x * x).mean(-1, /*keepdim=*/true).add_(eps).rsqrt_();
  }
  const torch::Tensor xf = x.to(torch::kFloat);
  return (xf * (xf * xf).mean(-1, /*keepdim=*/true).add_(eps).rsqrt_()).to(x.scalar_type());
}

RmsNormImpl::RmsNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight_ = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RmsNormImpl::forward(const torch::Tensor& x) {
  if (torch::Tensor y = fused::NormScaleShift(x, eps_, weight_, {}); y.defined()) return y;
  return RmsNormalize(x, eps_) * weight_.to(x.scalar_type());
}

Rope2d::Rope2d(const ModelConfig& config) {
  const int64_t grid = config.grid();
  const int64_t quarter = config.head_dim() / 4;  // rotation pairs per axis
  // freq_i = theta^(-i / quarter) over (row, col): the first half of the pairs rotates with the
  // patch row, the second with the column.
  const torch::Tensor freqs = torch::pow(
      config.rope_theta, -torch::arange(quarter, torch::kDouble) / static_cast<double>(quarter));
  const torch::Tensor idx = torch::arange(grid * grid, torch::kLong);
  const torch::Tensor rows = (idx / grid).to(torch::kDouble).unsqueeze(1);  // floor: non-negative
  const torch::Tensor cols = (idx % grid).to(torch::kDouble).unsqueeze(1);
  const torch::Tensor angles = torch::cat({rows * freqs, cols * freqs}, 1);  // [K, head_dim / 2]
  const torch::Tensor c = torch::cos(angles), s = torch::sin(angles);
  cos_ = torch::stack({c, c}, -1).flatten(-2).to(torch::kFloat);  // [K, head_dim]
  sin_ = torch::stack({-s, s}, -1).flatten(-2).to(torch::kFloat);
}

Rotary Rope2d::Tables(const torch::Tensor& positions, const torch::Device& device) const {
  const torch::Tensor flat = positions.reshape({-1}).to(torch::kLong);
  std::vector<int64_t> shape = {positions.size(-1), cos_.size(1)};
  if (positions.dim() == 2) shape = {positions.size(0), 1, positions.size(1), cos_.size(1)};
  return {cos_.index_select(0, flat).view(shape).to(device),
          sin_.index_select(0, flat).view(shape).to(device)};
}

torch::Tensor Rotary::Apply(const torch::Tensor& x) const {
  auto sizes = x.sizes().vec();
  const int64_t hd = sizes.back();
  std::vector<int64_t> pairs_shape(sizes.begin(), sizes.end() - 1);
  pairs_shape.insert(pairs_shape.end(), {hd / 2, 2});
  const torch::Tensor pairs = x.reshape(pairs_shape);
  // Swap each pair with stack (flip and index_select are several times slower on CPU).
  const torch::Tensor swapped =
      torch::stack({pairs.select(-1, 1), pairs.select(-1, 0)}, -1).view(sizes);
  const torch::Tensor c = cos.scalar_type() == x.scalar_type() ? cos : cos.to(x.scalar_type());
  const torch::Tensor s = sin.scalar_type() == x.scalar_type() ? sin : sin.to(x.scalar_type());
  return x * c + swapped * s;
}

torch::Tensor NormModulate(const torch::Tensor& x, double eps, const torch::Tensor& shift,
                           const torch::Tensor& scale) {
  if (torch::Tensor y = fused::NormScaleShift(x, eps, scale, shift); y.defined()) return y;
  // Plain mul/add: LibTorch 1.13's broadcasting addcmul is ~20x slower on CPU.
  return RmsNormalize(x, eps) * scale + shift;
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
  if (config.conditioning == Conditioning::kText) {
    cross_norm_ = register_module("cross_norm", RmsNorm(d));
    cross_q_norm_ = register_module("cross_q_norm", RmsNorm(head_dim_));
    cross_k_norm_ = register_module("cross_k_norm", RmsNorm(head_dim_));
    cross_q_ = register_module("cross_q", nn::Linear(nn::LinearOptions(d, d).bias(false)));
    cross_kv_ = register_module(
        "cross_kv", nn::Linear(nn::LinearOptions(config.text_width, 2 * d).bias(false)));
    cross_proj_ = register_module("cross_proj", nn::Linear(nn::LinearOptions(d, d).bias(false)));
  }
  // AdaLN-Zero: every block starts as the identity, which keeps deep stacks stable early on.
  torch::NoGradGuard no_grad;
  ada_->weight.zero_();
  ada_->bias.zero_();
  if (cross_proj_) cross_proj_->weight.zero_();
}

std::pair<torch::Tensor, torch::Tensor> DartBlockImpl::CrossKeysValues(
    const torch::Tensor& text_tokens) {
  TORCH_CHECK(cross_kv_, "CrossKeysValues: this block has no cross-attention (not a text model)");
  const int64_t r = text_tokens.size(0), l = text_tokens.size(1);
  const torch::Tensor kv =
      cross_kv_->forward(text_tokens).view({r, l, 2, heads_, head_dim_}).permute({2, 0, 3, 1, 4});
  return {cross_k_norm_->forward(kv[0]), kv[1]};
}

torch::Tensor DartBlockImpl::Modulation(const torch::Tensor& cond) {
  std::vector<torch::Tensor> m = ada_->forward(cond).chunk(6, -1);
  m[1] = norm1_->weight() * (1 + m[1]);
  m[4] = norm2_->weight() * (1 + m[4]);
  return torch::cat(m, -1);
}

torch::Tensor DartBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& modulation,
                                     const Rotary& rotary, const AttendFn& attend,
                                     const CrossContext* cross) {
  const int64_t r = x.size(0);
  const int64_t n = x.size(1);
  const std::vector<torch::Tensor> mod = modulation.unsqueeze(1).chunk(6, -1);

  // Self-attention: q and k normalised and rotated, v as projected, each [R, H, N, hd].
  const torch::Tensor h = NormModulate(x, norm1_->eps(), mod[0], mod[1]);
  const torch::Tensor qkv = qkv_->forward(h).view({r, n, 3, heads_, head_dim_});
  const torch::Tensor qk = QkNormRotary(qkv, rotary);  // [2, R, H, N, hd]
  const torch::Tensor attn = attend(qk[0], qk[1], qkv.select(2, 2).transpose(1, 2));
  const torch::Tensor attn_out = proj_->forward(attn.transpose(1, 2).reshape({r, n, -1}));
  torch::Tensor y = GatedResidual(x, mod[2], attn_out);

  if (cross_q_) {
    TORCH_CHECK(cross != nullptr, "DartBlock: a text model's block needs the prompt context");
    // Normalised over head_dim before the transpose: the same values, from contiguous memory.
    const torch::Tensor q_tokens =
        cross_q_->forward(cross_norm_->forward(y)).view({r, n, heads_, head_dim_});
    const torch::Tensor q = cross_q_norm_->forward(q_tokens).transpose(1, 2);
    const torch::Tensor c = Attention(q, cross->k, cross->v, cross->mask);  // [R, H, N, hd]
    y = y + cross_proj_->forward(c.transpose(1, 2).reshape({r, n, -1}));
  }

  // SwiGLU MLP.
  const torch::Tensor h2 = NormModulate(y, norm2_->eps(), mod[3], mod[4]);
  const std::vector<torch::Tensor> gate_up = w_gate_up_->forward(h2).chunk(2, -1);
  const torch::Tensor mlp = w_down_->forward(torch::silu(gate_up[0]) * gate_up[1]);
  return GatedResidual(y, mod[5], mlp);
}

torch::Tensor DartBlockImpl::QkNormRotary(const torch::Tensor& qkv, const Rotary& rotary) {
  if (torch::Tensor qk = fused::QkNormRotary(qkv, q_norm_->weight(), k_norm_->weight(),
                                             q_norm_->eps(), rotary.cos, rotary.sin);
      qk.defined()) {
    return qk;
  }
  // Q and K normalised and rotated together: one kernel each instead of two.
  const torch::Tensor qk_scale =
      torch::stack({q_norm_->weight(), k_norm_->weight()}).view({2, 1, 1, 1, head_dim_});
  const torch::Tensor qk = qkv.permute({2, 0, 3, 1, 4}).narrow(0, 0, 2);
  return rotary.Apply(RmsNormalize(qk, q_norm_->eps()) * qk_scale.to(qkv.scalar_type()));
}

torch::Tensor GatedResidual(const torch::Tensor& x, const torch::Tensor& gate,
                            const torch::Tensor& y) {
  if (torch::Tensor out = fused::GatedResidual(x, gate, y); out.defined()) return out;
  return x + gate * y;
}

}  // namespace dartserve::model
