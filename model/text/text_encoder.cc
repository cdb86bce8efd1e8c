#include "model/text/text_encoder.h"

#include <algorithm>
#include <string>

#include "model/torch_compat.h"

namespace dartserve::model {

namespace nn = torch::nn;

namespace {

constexpr double kTextRopeTheta = 10000.0;

}  // namespace

TextBatch PadBatch(const std::vector<std::vector<int>>& ids, int pad_id, int min_length) {
  size_t length = static_cast<size_t>(std::max(min_length, 0));
  for (const std::vector<int>& row : ids) length = std::max(length, row.size());
  const auto b = static_cast<int64_t>(ids.size());
  const auto l = static_cast<int64_t>(length);
  torch::Tensor tokens = torch::full({b, l}, pad_id, torch::kLong);
  torch::Tensor mask = torch::zeros({b, l}, torch::kBool);
  auto t = tokens.accessor<int64_t, 2>();
  auto m = mask.accessor<bool, 2>();
  for (int64_t i = 0; i < b; ++i) {
    const std::vector<int>& row = ids[static_cast<size_t>(i)];
    for (size_t j = 0; j < row.size(); ++j) {
      t[i][static_cast<int64_t>(j)] = row[j];
      m[i][static_cast<int64_t>(j)] = true;
    }
  }
  return {tokens, mask};
}

TextBlockImpl::TextBlockImpl(const ModelConfig& config)
    : heads_(config.text_heads), head_dim_(config.text_head_dim()) {
  const int64_t d = config.text_width;
  const int64_t hidden = config.text_mlp_hidden();
  norm1_ = register_module("norm1", RmsNorm(d));
  norm2_ = register_module("norm2", RmsNorm(d));
  q_norm_ = register_module("q_norm", RmsNorm(head_dim_));
  k_norm_ = register_module("k_norm", RmsNorm(head_dim_));
  qkv_ = register_module("qkv", nn::Linear(nn::LinearOptions(d, 3 * d).bias(false)));
  proj_ = register_module("proj", nn::Linear(nn::LinearOptions(d, d).bias(false)));
  w_gate_up_ =
      register_module("w_gate_up", nn::Linear(nn::LinearOptions(d, 2 * hidden).bias(false)));
  w_down_ = register_module("w_down", nn::Linear(nn::LinearOptions(hidden, d).bias(false)));
}

torch::Tensor TextBlockImpl::forward(const torch::Tensor& x, const Rotary& rotary,
                                     const torch::Tensor& attn_mask) {
  const int64_t b = x.size(0);
  const int64_t l = x.size(1);
  const torch::Tensor qkv =
      qkv_->forward(norm1_->forward(x)).view({b, l, 3, heads_, head_dim_}).permute({2, 0, 3, 1, 4});
  const torch::Tensor q = rotary.Apply(q_norm_->forward(qkv[0]));
  const torch::Tensor k = rotary.Apply(k_norm_->forward(qkv[1]));
  const torch::Tensor attn = Attention(q, k, qkv[2], attn_mask);  // [B, H, L, hd]
  const torch::Tensor y = x + proj_->forward(attn.transpose(1, 2).reshape({b, l, -1}));

  const std::vector<torch::Tensor> gate_up = w_gate_up_->forward(norm2_->forward(y)).chunk(2, -1);
  return y + w_down_->forward(torch::silu(gate_up[0]) * gate_up[1]);
}

TextEncoderImpl::TextEncoderImpl(const ModelConfig& config)
    : width_(config.text_width), max_tokens_(config.text_max_tokens) {
  embed_ = register_module(
      "embed", nn::Embedding(nn::EmbeddingOptions(config.text_vocab_size, config.text_width)));
  blocks_ = register_module("blocks", nn::ModuleList());
  for (int i = 0; i < config.text_depth; ++i) blocks_->push_back(TextBlock(config));
  norm_ = register_module("norm", RmsNorm(config.text_width));

  // Pair i of the head dim rotates by position * theta^(-i / pairs), laid out for Rotary::Apply:
  // cos = (c, c), sin = (-s, s) per pair.
  const int64_t pairs = config.text_head_dim() / 2;
  const torch::Tensor freqs = torch::pow(
      kTextRopeTheta, -torch::arange(pairs, torch::kDouble) / static_cast<double>(pairs));
  const torch::Tensor angles =
      torch::arange(max_tokens_, torch::kDouble).unsqueeze(1) * freqs;  // [max_tokens, pairs]
  const torch::Tensor c = torch::cos(angles), s = torch::sin(angles);
  rope_cos_ = torch::stack({c, c}, -1).flatten(-2).to(torch::kFloat);
  rope_sin_ = torch::stack({-s, s}, -1).flatten(-2).to(torch::kFloat);
}

TextFeatures TextEncoderImpl::forward(const torch::Tensor& tokens, const torch::Tensor& mask) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.scalar_type() == torch::kLong,
              "TextEncoder: tokens must be [B, L] int64, got ", tokens.sizes(), " ",
              tokens.scalar_type());
  TORCH_CHECK(mask.scalar_type() == torch::kBool && mask.sizes() == tokens.sizes(),
              "TextEncoder: mask must be bool with the tokens' shape ", tokens.sizes(), ", got ",
              mask.sizes(), " ", mask.scalar_type());
  const int64_t b = tokens.size(0);
  const int64_t l = tokens.size(1);
  TORCH_CHECK(l <= max_tokens_, "TextEncoder: ", l, " tokens exceed text_max_tokens ", max_tokens_);
  const torch::Device device = embed_->weight.device();
  const torch::Tensor ids = tokens.to(device);
  const torch::Tensor real = mask.to(device);

  // Positions count real tokens, so padding anywhere in a row does not shift them.
  const torch::Tensor positions = (real.to(torch::kLong).cumsum(1) - 1).clamp_min(0).reshape({-1});
  const std::vector<int64_t> table_shape = {b, 1, l, rope_cos_.size(1)};  // broadcast over heads
  const Rotary rotary{rope_cos_.to(device).index_select(0, positions).view(table_shape),
                      rope_sin_.to(device).index_select(0, positions).view(table_shape)};

  // Queries see the real keys, and themselves: for real queries that adds nothing, and it keeps
  // an all-padding row's softmax non-empty (finite) without letting padding reach real tokens.
  const torch::Tensor self =
      torch::eye(l, torch::TensorOptions().dtype(torch::kBool).device(device));
  const torch::Tensor attn_mask = real.view({b, 1, 1, l}).logical_or(self.view({1, 1, l, l}));

  torch::Tensor x = embed_->forward(ids);
  for (const auto& block : *blocks_) x = block->as<TextBlockImpl>()->forward(x, rotary, attn_mask);
  const torch::Tensor weights = real.unsqueeze(-1).to(x.scalar_type());  // [B, L, 1]
  const torch::Tensor out = norm_->forward(x) * weights;
  const torch::Tensor pooled = out.sum(1) / weights.sum(1).clamp_min(1.0);
  return {out, real, pooled};
}

}  // namespace dartserve::model
