#include "model/dart.h"

#include <map>

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
  step_embed_ = register_module("step_embed", nn::Embedding(config.num_steps, d));
  const int64_t num_cond = config.conditioning == Conditioning::kClass ? config.num_classes + 1 : 1;
  cond_embed_ = register_module("cond_embed", nn::Embedding(num_cond, d));
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
  nn::init::normal_(cond_embed_->weight, 0.0, 0.02);
  final_ada_->weight.zero_();
  final_ada_->bias.zero_();
  out_proj_->weight.zero_();
  out_proj_->bias.zero_();
}

torch::Tensor DartImpl::Condition(const torch::Tensor& cond_ids) {
  return torch::silu(cond_embed_->forward(cond_ids.to(torch::kLong)));
}

torch::Tensor DartImpl::Features(const torch::Tensor& h, const torch::Tensor& cond) {
  const std::vector<torch::Tensor> mod = final_ada_->forward(cond).unsqueeze(1).chunk(2, -1);
  return Modulate(final_norm_->forward(h), mod[0], mod[1]);
}

torch::Tensor DartImpl::forward(const torch::Tensor& x, const torch::Tensor& cond_ids) {
  return MeanHead(ForwardFeatures(x, cond_ids));
}

torch::Tensor DartImpl::ForwardStep(const torch::Tensor& x, std::span<const int64_t> blocks,
                                    const torch::Tensor& cond_ids,
                                    std::span<KvCache* const> caches) {
  return MeanHead(ForwardStepFeatures(x, blocks, cond_ids, caches));
}

torch::Tensor DartImpl::ForwardFeatures(const torch::Tensor& x, const torch::Tensor& cond_ids) {
  const int64_t k = config_.tokens_per_block();
  const int64_t len = x.size(1);
  TORCH_CHECK(len % k == 0 && len / k <= config_.num_steps, "sequence of ", len,
              " tokens is not a whole number of blocks (K = ", k, ", T = ", config_.num_steps, ")");
  const int64_t n_blocks = len / k;
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  const torch::Tensor block_of = torch::arange(n_blocks, long_opts).repeat_interleave(k);  // [L]
  // Block-causal mask: query i may attend key j iff block(j) <= block(i).
  const torch::Tensor mask = block_of.unsqueeze(1) >= block_of.unsqueeze(0);  // [L, L]

  const torch::Tensor cond = Condition(cond_ids);
  torch::Tensor h = in_proj_->forward(x) + step_embed_->forward(block_of).unsqueeze(0);
  const AttendFn attend = [&mask](const torch::Tensor& q, const torch::Tensor& kk,
                                  const torch::Tensor& v) { return Attention(q, kk, v, mask); };
  for (DartBlock& block : block_list_) h = block->forward(h, cond, rope_, attend);
  return Features(h, cond);
}

torch::Tensor DartImpl::ForwardStepFeatures(const torch::Tensor& x, std::span<const int64_t> blocks,
                                            const torch::Tensor& cond_ids,
                                            std::span<KvCache* const> caches) {
  const int64_t rows = x.size(0);
  const int64_t k = config_.tokens_per_block();
  TORCH_CHECK(
      static_cast<int64_t>(blocks.size()) == rows && static_cast<int64_t>(caches.size()) == rows,
      "ForwardStep: blocks and caches must have one entry per row");
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(blocks[r] >= 0 && blocks[r] < config_.num_steps, "block index out of range");
    TORCH_CHECK(caches[r]->length == blocks[r] * k, "KV cache length does not match the block");
  }
  const torch::Tensor block_ids =
      torch::from_blob(const_cast<int64_t*>(blocks.data()), {rows}, torch::kLong).to(x.device());

  std::map<int64_t, std::vector<int64_t>> rows_by_length;  // cache length -> rows
  for (int64_t r = 0; r < rows; ++r) rows_by_length[caches[r]->length].push_back(r);

  const torch::Tensor cond = Condition(cond_ids);
  torch::Tensor h = in_proj_->forward(x) + step_embed_->forward(block_ids).unsqueeze(1);
  for (size_t layer = 0; layer < block_list_.size(); ++layer) {
    // Rows sit at different steps, so each attends over its own cache length. Rows at the same
    // length are attended together (their cache prefixes stacked: a copy far cheaper than the
    // attention itself). The linear layers, most of the FLOPs, stay batched across all rows.
    const AttendFn attend = [&, layer](const torch::Tensor& q, const torch::Tensor& kk,
                                       const torch::Tensor& v) {
      std::vector<torch::Tensor> outs(rows);
      for (const auto& [start, members] : rows_by_length) {
        for (int64_t r : members) {
          caches[r]->k[layer].narrow(1, start, k).copy_(kk[r]);
          caches[r]->v[layer].narrow(1, start, k).copy_(v[r]);
        }
        if (members.size() == 1) {
          const int64_t r = members.front();
          outs[r] = Attention(q[r], caches[r]->k[layer].narrow(1, 0, start + k),
                              caches[r]->v[layer].narrow(1, 0, start + k));
          continue;
        }
        std::vector<torch::Tensor> qs, ks, vs;
        for (int64_t r : members) {
          qs.push_back(q[r]);
          ks.push_back(caches[r]->k[layer].narrow(1, 0, start + k));
          vs.push_back(caches[r]->v[layer].narrow(1, 0, start + k));
        }
        const torch::Tensor out = Attention(torch::stack(qs), torch::stack(ks), torch::stack(vs));
        for (size_t i = 0; i < members.size(); ++i) outs[members[i]] = out[i];
      }
      return torch::stack(outs);
    };
    h = block_list_[layer]->forward(h, cond, rope_, attend);
  }
  for (KvCache* cache : caches) cache->length += k;
  return Features(h, cond);
}

}  // namespace dartserve::model
