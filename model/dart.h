// The DART transformer (research/dart.md §2, §3, §5, §8).
//
// variant = dart: the sequence is T blocks [x_T | ... | x_1] of K patch tokens each, raster order
// inside a block. Attention is block-causal: a token sees its own block and every noisier block,
// never a cleaner one. The output at the block of x_t predicts x_0 (no shift).
// variant = dart_ar: T + 1 blocks [x_T | ... | x_1 | x_0] without the last token, a fully causal
// mask, and a one-token shift: the output at position i predicts the x_0 patch of token i + 1.
// Both: the noise level enters through a learned embedding of the block index added to every
// token of a block; positions inside a block through 2-D RoPE; the condition (class embedding,
// with a null class for guidance) through AdaLN-Zero.
//
// Two entry points share all weights and all block code:
//  - forward(): teacher-forced over a whole trajectory (training; also the recompute baseline).
//  - ForwardStep(): the next tokens of each row against that row's KV cache (sampling): a whole
//    block for dart, the x_T block and then single tokens for dart_ar.
// Thread-compatibility: a module may be used by one thread at a time.
#ifndef DARTSERVE_MODEL_DART_H_
#define DARTSERVE_MODEL_DART_H_

#include <torch/torch.h>

#include <span>
#include <vector>

#include "model/config.h"
#include "model/flow_head.h"
#include "model/layers.h"

namespace dartserve::model {

// Keys and values of one row (one guidance branch of one request), preallocated to the full
// trajectory: a request's KV memory is known exactly when it starts and never grows.
struct KvCache {
  std::vector<torch::Tensor> k;  // per layer [heads, config.sequence_length(), head_dim]
  std::vector<torch::Tensor> v;
  int64_t length = 0;  // tokens written so far

  static KvCache Allocate(const ModelConfig& config, const torch::TensorOptions& options);
  int64_t bytes() const;
};

// [B, C, H, W] images -> [B, K, C * p * p] tokens (raster order of patches), and back.
torch::Tensor Patchify(const torch::Tensor& images, int patch_size);
torch::Tensor Unpatchify(const torch::Tensor& tokens, int patch_size, int channels, int image_size);

class DartImpl : public torch::nn::Module {
 public:
  // `config` must be valid (ModelConfig::Validate).
  explicit DartImpl(const ModelConfig& config);

  const ModelConfig& config() const { return config_; }
  // dtype and device of the weights: where activations and KV caches live.
  torch::TensorOptions options() const { return in_proj_->weight.options(); }

  // Teacher-forced forward over the first L tokens of a trajectory (L a whole number of blocks for
  // dart; any L <= sequence_length() for dart_ar). x: [B, L, token_dim] with blocks in order x_T,
  // x_{T-1}, ...; cond_ids: [B] int64 condition ids (class id, or null_class(); 0 for
  // unconditional models). Returns x_0 predictions of the same shape as x (for dart_ar, position
  // i predicts token i + 1).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cond_ids);

  // One sampling step for R rows. x: [R, N, token_dim]: each row's next N tokens, which continue
  // its cache (they sit at positions caches[r]->length ...; for dart N = K and the cache holds
  // whole blocks); cond_ids: [R] int64. Appends every layer's K/V of the new tokens to caches[r]
  // and returns the predictions [R, N, d] at those positions.
  torch::Tensor ForwardStep(const torch::Tensor& x, const torch::Tensor& cond_ids,
                            std::span<KvCache* const> caches);

  // The same two passes, returning the backbone's per-token output features [.., width] (after
  // the final norm and AdaLN) that the heads read: forward() = MeanHead(ForwardFeatures()).
  torch::Tensor ForwardFeatures(const torch::Tensor& x, const torch::Tensor& cond_ids);
  torch::Tensor ForwardStepFeatures(const torch::Tensor& x, const torch::Tensor& cond_ids,
                                    std::span<KvCache* const> caches);
  // The mean (x_0 regression) head: features -> x_0 patches. Present in every model; with a flow
  // head it is the auxiliary head.
  torch::Tensor MeanHead(const torch::Tensor& features) { return out_proj_->forward(features); }
  // The flow head (config.head == flow), else null.
  FlowHead& flow_head() { return flow_head_; }

 private:
  torch::Tensor Condition(const torch::Tensor& cond_ids);
  // Attention mask [Nq, num_keys] (true: may attend) for queries at sequence positions
  // `query_pos` [Nq] over keys at positions [0, num_keys): block-causal, or causal for dart_ar.
  torch::Tensor VisibleKeys(const torch::Tensor& query_pos, int64_t num_keys) const;
  torch::Tensor Features(const torch::Tensor& h, const torch::Tensor& cond);

  ModelConfig config_;
  Rope2d rope_;
  torch::nn::Linear in_proj_{nullptr};
  torch::nn::Embedding step_embed_{nullptr};  // [num_blocks, D], indexed by block
  torch::nn::Embedding cond_embed_{nullptr};  // [num_classes + 1, D] (last = null), or [1, D]
  torch::nn::ModuleList blocks_{nullptr};
  std::vector<DartBlock> block_list_;
  RmsNorm final_norm_{nullptr};
  torch::nn::Linear final_ada_{nullptr};  // -> shift, scale (zero-init)
  torch::nn::Linear out_proj_{nullptr};   // zero-init
  FlowHead flow_head_{nullptr};
};
TORCH_MODULE(Dart);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_DART_H_
