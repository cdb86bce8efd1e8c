#include "model/dart.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "model/decode_attention.h"
#include "model/torch_compat.h"

namespace dartserve::model {

namespace nn = torch::nn;

KvCache KvCache::Allocate(const ModelConfig& config, const torch::TensorOptions& options) {
  KvCache cache;
  const std::vector<int64_t> shape = {config.heads, config.sequence_length(), config.head_dim()};
  for (int i = 0; i < config.depth; ++i) {
    cache.k.push_back(torch::empty(shape, options));
    cache.v.push_back(torch::empty(shape, options));
  }
  return cache;
}

int64_t KvCache::bytes() const {
  int64_t total = 0;
  for (size_t i = 0; i < k.size(); ++i) {
    total += k[i].numel() * k[i].element_size() + v[i].numel() * v[i].element_size();
  }
  return total;
}

int64_t Condition::bytes() const {
  const auto size = [](const torch::Tensor& t) -> int64_t {
    return t.defined() ? t.numel() * t.element_size() : 0;
  };
  int64_t total = size(final_mod);
  for (const torch::Tensor& m : block_mod) total += size(m);
  for (size_t i = 0; i < text_k.size(); ++i) total += size(text_k[i]) + size(text_v[i]);
  return total;
}

Condition Condition::Cat(std::span<const Condition* const> parts) {
  TORCH_CHECK(!parts.empty(), "Condition::Cat: no conditions");
  if (parts.size() == 1) return *parts[0];
  const auto cat = [&](const auto& get) {
    std::vector<torch::Tensor> all;
    for (const Condition* p : parts) all.push_back(get(*p));
    return torch::cat(all);
  };
  Condition out;
  out.final_mod = cat([](const Condition& c) { return c.final_mod; });
  for (size_t layer = 0; layer < parts[0]->block_mod.size(); ++layer) {
    out.block_mod.push_back(cat([layer](const Condition& c) { return c.block_mod[layer]; }));
  }
  if (parts[0]->text_mask.defined()) {
    out.text_mask = cat([](const Condition& c) { return c.text_mask; });
    for (size_t layer = 0; layer < parts[0]->text_k.size(); ++layer) {
      out.text_k.push_back(cat([layer](const Condition& c) { return c.text_k[layer]; }));
      out.text_v.push_back(cat([layer](const Condition& c) { return c.text_v[layer]; }));
    }
  }
  return out;
}

Condition Condition::Slice(int64_t start, int64_t length) const {
  Condition out;
  out.final_mod = final_mod.narrow(0, start, length);
  for (const torch::Tensor& m : block_mod) out.block_mod.push_back(m.narrow(0, start, length));
  if (text_mask.defined()) {
    out.text_mask = text_mask.narrow(0, start, length);
    for (size_t layer = 0; layer < text_k.size(); ++layer) {
      out.text_k.push_back(text_k[layer].narrow(0, start, length));
      out.text_v.push_back(text_v[layer].narrow(0, start, length));
    }
  }
  return out;
}

std::optional<CrossContext> Condition::Cross(size_t layer) const {
  if (!text_mask.defined()) return std::nullopt;
  return CrossContext{text_k[layer], text_v[layer], text_mask};
}

torch::Tensor Patchify(const torch::Tensor& images, int p) {
  const int64_t b = images.size(0), c = images.size(1), g = images.size(2) / p;
  return images.reshape({b, c, g, p, g, p})
      .permute({0, 2, 4, 1, 3, 5})
      .reshape({b, g * g, c * p * p});
}

torch::Tensor Unpatchify(const torch::Tensor& tokens, int p, int channels, int image_size) {
  const int64_t b = tokens.size(0), g = image_size / p;
  return tokens.reshape({b, g, g, channels, p, p})
      .permute({0, 3, 1, 4, 2, 5})
      .reshape({b, channels, image_size, image_size});
}

DartImpl::DartImpl(const ModelConfig& config) : config_(config), rope_(config) {
  const int64_t d = config.width;
  in_proj_ = register_module("in_proj", nn::Linear(config.token_dim(), d));
  step_embed_ = register_module("step_embed", nn::Embedding(config.num_blocks(), d));
  if (config.absolute_positions) {
    pos_embed_ = register_module("pos_embed", nn::Embedding(config.tokens_per_block(), d));
  }
  if (config.conditioning == Conditioning::kText) {
    text_encoder_ = register_module("text_encoder", TextEncoder(config));
    text_pool_ = register_module("text_pool", nn::Linear(config.text_width, d));
  } else {
    const int64_t num_cond =
        config.conditioning == Conditioning::kClass ? config.num_classes + 1 : 1;
    cond_embed_ = register_module("cond_embed", nn::Embedding(num_cond, d));
  }
  blocks_ = register_module("blocks", nn::ModuleList());
  for (int i = 0; i < config.depth; ++i) {
    block_list_.push_back(DartBlock(config));
    blocks_->push_back(block_list_.back());
  }
  final_norm_ = register_module("final_norm", RmsNorm(d));
  final_ada_ = register_module("final_ada", nn::Linear(d, 2 * d));
  out_proj_ = register_module("out_proj", nn::Linear(d, config.token_dim()));
  if (config.flow()) flow_head_ = register_module("flow_head", FlowHead(config));

  torch::NoGradGuard no_grad;
  nn::init::normal_(step_embed_->weight, 0.0, 0.02);
  if (pos_embed_) nn::init::normal_(pos_embed_->weight, 0.0, 0.02);
  if (cond_embed_) nn::init::normal_(cond_embed_->weight, 0.0, 0.02);
  final_ada_->weight.zero_();
  final_ada_->bias.zero_();
  out_proj_->weight.zero_();
  out_proj_->bias.zero_();
}

Condition DartImpl::ClassCondition(const torch::Tensor& cond_ids) {
  TORCH_CHECK(cond_embed_, "ClassCondition: a text model is conditioned on prompts");
  return ConditionOf(
      torch::silu(cond_embed_->forward(cond_ids.to(torch::kLong).to(options().device()))));
}

Condition DartImpl::ConditionOf(const torch::Tensor& vector) {
  Condition c;
  const std::vector<torch::Tensor> shift_scale = final_ada_->forward(vector).chunk(2, -1);
  c.final_mod = torch::cat({shift_scale[0], final_norm_->weight() * (1 + shift_scale[1])}, -1);
  for (DartBlock& block : block_list_) c.block_mod.push_back(block->Modulation(vector));
  return c;
}

Condition DartImpl::TextCondition(const TextBatch& prompts) {
  TORCH_CHECK(text_encoder_, "TextCondition: this model is not text-conditioned");
  const TextFeatures text = text_encoder_->forward(prompts.tokens, prompts.mask);
  Condition c = ConditionOf(torch::silu(text_pool_->forward(text.pooled)));
  c.text_mask = text.mask.view({text.mask.size(0), 1, 1, text.mask.size(1)});
  for (DartBlock& block : block_list_) {
    auto [k, v] = block->CrossKeysValues(text.tokens);
    c.text_k.push_back(std::move(k));
    c.text_v.push_back(std::move(v));
  }
  return c;
}

absl::StatusOr<TextBatch> DartImpl::EncodePrompts(std::span<const std::string> prompts) const {
  if (config_.conditioning != Conditioning::kText) {
    return absl::FailedPreconditionError("this model is not text-conditioned");
  }
  if (!tokenizer_) return absl::FailedPreconditionError("this text model has no tokenizer");
  std::vector<std::vector<int>> ids;
  for (const std::string& prompt : prompts) {
    absl::StatusOr<std::vector<int>> row = tokenizer_->Encode(prompt, config_.text_max_tokens);
    if (!row.ok()) return row.status();
    ids.push_back(*std::move(row));
  }
  return PadBatch(ids, tokenizer_->pad_id(), config_.text_max_tokens);
}

torch::Tensor DartImpl::Features(const torch::Tensor& h, const Condition& cond) {
  const std::vector<torch::Tensor> mod = cond.final_mod.unsqueeze(1).chunk(2, -1);
  return NormModulate(h, final_norm_->eps(), mod[0], mod[1]);
}

torch::Tensor DartImpl::Embed(const torch::Tensor& x, const torch::Tensor& block,
                              const torch::Tensor& raster) {
  torch::Tensor h = in_proj_->forward(x) + step_embed_->forward(block);
  return pos_embed_ ? h + pos_embed_->forward(raster) : h;
}

torch::Tensor DartImpl::forward(const torch::Tensor& x, const Condition& cond) {
  return MeanHead(ForwardFeatures(x, cond));
}

torch::Tensor DartImpl::ForwardStep(const torch::Tensor& x, const Condition& cond,
                                    std::span<KvCache* const> caches) {
  return MeanHead(ForwardStepFeatures(x, cond, caches));
}

torch::Tensor DartImpl::VisibleKeys(const torch::Tensor& query_pos, int64_t num_keys) const {
  const int64_t k = config_.tokens_per_block();
  const torch::Tensor key_pos = torch::arange(num_keys, query_pos.options());
  if (config_.autoregressive()) return key_pos.unsqueeze(0) <= query_pos.unsqueeze(1);
  return key_pos.div(k, "floor").unsqueeze(0) <= query_pos.div(k, "floor").unsqueeze(1);
}

torch::Tensor DartImpl::ForwardFeatures(const torch::Tensor& x, const Condition& cond) {
  const int64_t k = config_.tokens_per_block();
  const int64_t len = x.size(1);
  TORCH_CHECK(
      len >= 1 && len <= config_.sequence_length() && (config_.autoregressive() || len % k == 0),
      "sequence of ", len, " tokens does not fit the model (K = ", k,
      ", sequence length = ", config_.sequence_length(), ")");
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  const torch::Tensor pos = torch::arange(len, long_opts);
  const torch::Tensor block_of = pos.div(k, "floor");  // [L]
  const torch::Tensor mask = VisibleKeys(pos, len);    // [L, L]
  const torch::Tensor raster = pos.remainder(k);
  const Rotary rotary = rope_.Tables(raster.cpu(), x.device());

  TORCH_CHECK(cond.rows() == x.size(0), "ForwardFeatures: ", cond.rows(), " condition rows for ",
              x.size(0), " sequences");
  torch::Tensor h = Embed(x, block_of, raster);
  const AttendFn attend = [&mask](const torch::Tensor& q, const torch::Tensor& kk,
                                  const torch::Tensor& v) { return Attention(q, kk, v, mask); };
  for (size_t layer = 0; layer < block_list_.size(); ++layer) {
    const std::optional<CrossContext> cross = cond.Cross(layer);
    h = block_list_[layer]->forward(h, cond.block_mod[layer], rotary, attend,
                                    cross ? &*cross : nullptr);
  }
  return Features(h, cond);
}

torch::Tensor DartImpl::ForwardStepFeatures(const torch::Tensor& x, const Condition& cond,
                                            std::span<KvCache* const> caches) {
  const int64_t rows = x.size(0), n = x.size(1);
  TORCH_CHECK(cond.rows() == rows, "ForwardStep: ", cond.rows(), " condition rows for ", rows,
              " rows");
  const int64_t k = config_.tokens_per_block();
  TORCH_CHECK(static_cast<int64_t>(caches.size()) == rows,
              "ForwardStep: caches must have one entry per row");
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(caches[r]->length + n <= config_.sequence_length(),
                "ForwardStep: the new tokens overflow the KV cache");
    TORCH_CHECK(config_.autoregressive() || (n == k && caches[r]->length % k == 0),
                "ForwardStep: dart steps take one whole block per row");
  }
  std::vector<int64_t> starts(rows);
  std::vector<int64_t> lengths(rows);  // keys each row attends over, its new tokens included
  bool same_raster = true;             // always, for dart
  for (int64_t r = 0; r < rows; ++r) {
    starts[r] = caches[r]->length;
    lengths[r] = starts[r] + n;
    same_raster = same_raster && starts[r] % k == starts[0] % k;
  }
  // Positions [R, N] of the new tokens (built on the CPU: no device sync): their block (noise
  // level) and raster position. Rows at the same raster positions share one [N, hd] table.
  const torch::Tensor pos =
      torch::tensor(starts, torch::kLong).unsqueeze(1) + torch::arange(n, torch::kLong);
  const torch::Tensor raster = pos.remainder(k);
  const Rotary rotary = rope_.Tables(same_raster ? raster[0] : raster, x.device());
  const torch::Tensor block_ids = pos.div(k, "floor").to(x.device());

  std::map<int64_t, std::vector<int64_t>> rows_by_length;  // cache length -> rows
  for (int64_t r = 0; r < rows; ++r) rows_by_length[starts[r]].push_back(r);
  // Which cached keys each group's new tokens may see: all of them for dart (the cache holds only
  // noisier blocks and the new block itself); causal inside the new tokens for dart_ar.
  std::map<int64_t, torch::Tensor> masks;
  if (config_.autoregressive() && n > 1) {
    for (const auto& [start, members] : rows_by_length) {
      masks[start] = VisibleKeys(torch::arange(start, start + n, block_ids.options()), start + n);
    }
  }

  torch::Tensor h = Embed(x, block_ids, raster.to(x.device()));
  for (size_t layer = 0; layer < block_list_.size(); ++layer) {
    // Rows sit at different steps, so each attends over its own cache length. One token per row
    // reads the caches in place (DecodeAttention). Blocks of tokens at the same length are
    // attended together, their cache prefixes stacked: a copy far cheaper than the attention
    // itself. The linear layers, most of the FLOPs, stay batched across all rows.
    const AttendFn attend = [&, layer](const torch::Tensor& q, const torch::Tensor& kk,
                                       const torch::Tensor& v) {
      std::vector<torch::Tensor> layer_k(rows), layer_v(rows);
      for (int64_t r = 0; r < rows; ++r) {
        layer_k[r] = caches[r]->k[layer];
        layer_v[r] = caches[r]->v[layer];
        layer_k[r].narrow(1, starts[r], n).copy_(kk[r]);
        layer_v[r].narrow(1, starts[r], n).copy_(v[r]);
      }
      // One token per row (DART-AR): every row attends over its whole cache, read in place.
      if (DecodeAttentionApplies(q)) return DecodeAttention(q, layer_k, layer_v, lengths);
      std::vector<torch::Tensor> outs(rows);
      for (const auto& [start, members] : rows_by_length) {
        const auto it = masks.find(start);
        const torch::Tensor mask = it == masks.end() ? torch::Tensor() : it->second;
        if (members.size() == 1) {
          const int64_t r = members.front();
          outs[r] = Attention(q[r], layer_k[r].narrow(1, 0, lengths[r]),
                              layer_v[r].narrow(1, 0, lengths[r]), mask);
          continue;
        }
        std::vector<torch::Tensor> qs, ks, vs;
        for (int64_t r : members) {
          qs.push_back(q[r]);
          ks.push_back(layer_k[r].narrow(1, 0, lengths[r]));
          vs.push_back(layer_v[r].narrow(1, 0, lengths[r]));
        }
        const torch::Tensor out =
            Attention(torch::stack(qs), torch::stack(ks), torch::stack(vs), mask);
        for (size_t i = 0; i < members.size(); ++i) outs[members[i]] = out[i];
      }
      return torch::stack(outs);
    };
    const std::optional<CrossContext> cross = cond.Cross(layer);
    h = block_list_[layer]->forward(h, cond.block_mod[layer], rotary, attend,
                                    cross ? &*cross : nullptr);
  }
  for (KvCache* cache : caches) cache->length += n;
  return Features(h, cond);
}

ModelInfo DescribeModel(const Dart& model) {
  const ModelConfig& c = model->config();
  ModelInfo info;
  info.conditioning = c.conditioning;
  info.num_classes = c.conditioning == Conditioning::kClass ? c.num_classes : 0;
  info.image_size = c.pixel_size();
  info.channels = c.pixel_channels();
  info.latent = c.latent();
  info.denoising_steps = c.num_steps;
  info.progress_steps = c.generation_steps();
  info.default_flow_steps = c.head == OutputHead::kFlow ? c.flow_steps : 0;
  for (const torch::Tensor& p : model->parameters()) info.parameters += p.numel();
  return info;
}

}  // namespace dartserve::model
