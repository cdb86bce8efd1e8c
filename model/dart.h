// The DART transformer (docs/model.md).
//
// variant = dart: the sequence is T blocks [x_T | ... | x_1] of K patch tokens each, raster order
// inside a block. Attention is block-causal: a token sees its own block and every noisier block,
// never a cleaner one. The output at the block of x_t predicts x_0 (no shift).
// variant = dart_ar: T + 1 blocks [x_T | ... | x_1 | x_0] without the last token, a fully causal
// mask, and a one-token shift: the output at position i predicts the x_0 patch of token i + 1.
// Both: the noise level enters through a learned embedding of the block index added to every
// token of a block; positions inside a block through 2-D RoPE; the condition through AdaLN-Zero:
// a class embedding (with a null class for guidance), or for text models (docs/model.md, "Text
// conditioning") the projected mean-pooled prompt features, while the prompt's tokens also enter
// every block by cross-attention. The empty prompt is the unconditional branch of guidance.
//
// A condition is computed once per request (Condition: every block's AdaLN-Zero modulation and,
// for text, every layer's cross-attention keys and values) and reused at each of its steps.
//
// Two entry points share all weights and all block code:
//  - forward(): teacher-forced over a whole trajectory (training; also the recompute baseline).
//  - ForwardStep(): the next tokens of each row against that row's KV cache (sampling): a whole
//    block for dart, the x_T block and then single tokens for dart_ar.
// Thread-compatibility: a module may be used by one thread at a time.
#ifndef DARTSERVE_MODEL_DART_H_
#define DARTSERVE_MODEL_DART_H_

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/autoencoder.h"
#include "model/config.h"
#include "model/flow_head.h"
#include "model/layers.h"
#include "model/text/text_encoder.h"
#include "model/text/tokenizer.h"

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

// The condition of R rows as the blocks consume it.
struct Condition {
  // AdaLN-Zero, from the SiLU-activated condition vector: per block its shifts, scales and gates
  // [R, 6 * width] (DartBlockImpl::Modulation), and the final norm's shift and scale
  // [R, 2 * width]; every scale with its norm's weight folded in (NormModulate).
  std::vector<torch::Tensor> block_mod;
  torch::Tensor final_mod;
  // Text models: per layer, the prompt's cross-attention keys and values [R, heads, Lt,
  // head_dim], and the key mask [R, 1, 1, Lt] (true: real token). Empty for other models.
  std::vector<torch::Tensor> text_k;
  std::vector<torch::Tensor> text_v;
  torch::Tensor text_mask;

  int64_t rows() const { return final_mod.size(0); }
  // Memory held by the modulations and the text keys and values.
  int64_t bytes() const;
  // The rows of `parts`, in order, as one condition (every part from the same model, so the same
  // prompt length Lt).
  static Condition Cat(std::span<const Condition* const> parts);
  // Rows [start, start + length) (views, no copy).
  Condition Slice(int64_t start, int64_t length) const;
  // The context of layer `layer` for DartBlock::forward: null for non-text conditions.
  std::optional<CrossContext> Cross(size_t layer) const;
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

  // Conditions. ClassCondition: class and unconditional models; cond_ids [B] int64 (class id, or
  // null_class(); 0 for unconditional models). TextCondition: text models; a padded batch of
  // prompt ids (EncodePrompts) runs through the text encoder and every block's cross K/V
  // projection.
  Condition ClassCondition(const torch::Tensor& cond_ids);
  Condition TextCondition(const TextBatch& prompts);

  // Text models: the tokenizer that came with the checkpoint (null until set, and for other
  // models). The model does not own its lifetime alone: samplers may share it.
  const std::shared_ptr<const Tokenizer>& tokenizer() const { return tokenizer_; }
  void set_tokenizer(std::shared_ptr<const Tokenizer> tokenizer) {
    tokenizer_ = std::move(tokenizer);
  }
  // Latent models (docs/model.md, "Latent DART"): the autoencoder whose normalized latents the
  // model denoises, which decodes them to pixels (null until set, and for pixel models). Like the
  // tokenizer it comes with the checkpoint and is shared, not copied: an engine may hold it too.
  // It is not a submodule: its weights are not the model's parameters (never trained with it, not
  // in parameters() or model.safetensors), and the model's to() and eval() do not reach it. It
  // must fit the config (CheckLatentGeometry in model/checkpoint.h); LoadCheckpoint checks that.
  Autoencoder autoencoder() const { return autoencoder_; }
  void set_autoencoder(Autoencoder autoencoder) { autoencoder_ = std::move(autoencoder); }
  // Tokenizes `prompts` (the empty prompt is the unconditional one) and pads every row to
  // text_max_tokens, so conditions of any requests can be batched. INVALID_ARGUMENT (naming the
  // prompt's length and the limit) for a prompt that is too long; FAILED_PRECONDITION for a model
  // without text conditioning or without a tokenizer.
  absl::StatusOr<TextBatch> EncodePrompts(std::span<const std::string> prompts) const;

  // Teacher-forced forward over the first L tokens of a trajectory (L a whole number of blocks for
  // dart; any L <= sequence_length() for dart_ar). x: [B, L, token_dim] with blocks in order x_T,
  // x_{T-1}, ...; cond: B rows. Returns x_0 predictions of the same shape as x (for dart_ar,
  // position i predicts token i + 1). The cond_ids overloads use ClassCondition(cond_ids).
  torch::Tensor forward(const torch::Tensor& x, const Condition& cond);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cond_ids) {
    return forward(x, ClassCondition(cond_ids));
  }

  // One sampling step for R rows. x: [R, N, token_dim]: each row's next N tokens, which continue
  // its cache (they sit at positions caches[r]->length ...; for dart N = K and the cache holds
  // whole blocks); cond: R rows. Appends every layer's K/V of the new tokens to caches[r] and
  // returns the predictions [R, N, d] at those positions.
  torch::Tensor ForwardStep(const torch::Tensor& x, const Condition& cond,
                            std::span<KvCache* const> caches);
  torch::Tensor ForwardStep(const torch::Tensor& x, const torch::Tensor& cond_ids,
                            std::span<KvCache* const> caches) {
    return ForwardStep(x, ClassCondition(cond_ids), caches);
  }

  // The same two passes, returning the backbone's per-token output features [.., width] (after
  // the final norm and AdaLN) that the heads read: forward() = MeanHead(ForwardFeatures()).
  torch::Tensor ForwardFeatures(const torch::Tensor& x, const Condition& cond);
  torch::Tensor ForwardFeatures(const torch::Tensor& x, const torch::Tensor& cond_ids) {
    return ForwardFeatures(x, ClassCondition(cond_ids));
  }
  torch::Tensor ForwardStepFeatures(const torch::Tensor& x, const Condition& cond,
                                    std::span<KvCache* const> caches);
  torch::Tensor ForwardStepFeatures(const torch::Tensor& x, const torch::Tensor& cond_ids,
                                    std::span<KvCache* const> caches) {
    return ForwardStepFeatures(x, ClassCondition(cond_ids), caches);
  }
  // The mean (x_0 regression) head: features -> x_0 patches. Present in every model; with a flow
  // head it is the auxiliary head.
  torch::Tensor MeanHead(const torch::Tensor& features) { return out_proj_->forward(features); }
  // The flow head (config.head == flow), else null.
  FlowHead& flow_head() { return flow_head_; }
  // The text encoder (text models), else null.
  TextEncoder& text_encoder() { return text_encoder_; }

 private:
  // Attention mask [Nq, num_keys] (true: may attend) for queries at sequence positions
  // `query_pos` [Nq] over keys at positions [0, num_keys): block-causal, or causal for dart_ar.
  torch::Tensor VisibleKeys(const torch::Tensor& query_pos, int64_t num_keys) const;
  torch::Tensor Features(const torch::Tensor& h, const Condition& cond);
  // The condition of rows with AdaLN input `vector` [R, D] (SiLU-activated): every block's
  // modulation and the final norm's; no prompt context.
  Condition ConditionOf(const torch::Tensor& vector);
  // The first layer's input: in_proj(x) plus the embeddings of each token's block (noise level)
  // and, with absolute_positions, raster position. `block` and `raster` are index tensors on x's
  // device that broadcast against x's leading dimensions ([L] or [R, N]).
  torch::Tensor Embed(const torch::Tensor& x, const torch::Tensor& block,
                      const torch::Tensor& raster);

  ModelConfig config_;
  Rope2d rope_;
  torch::nn::Linear in_proj_{nullptr};
  torch::nn::Embedding step_embed_{nullptr};  // [num_blocks, D], indexed by block
  torch::nn::Embedding pos_embed_{nullptr};   // [K, D] by raster position; absolute_positions
  torch::nn::Embedding cond_embed_{nullptr};  // [num_classes + 1, D] (last = null), or [1, D];
                                              // null for text models
  TextEncoder text_encoder_{nullptr};         // text models
  torch::nn::Linear text_pool_{nullptr};      // pooled prompt -> AdaLN condition (text models)
  std::shared_ptr<const Tokenizer> tokenizer_;
  Autoencoder autoencoder_{nullptr};  // latent models; not registered (see autoencoder())
  torch::nn::ModuleList blocks_{nullptr};
  std::vector<DartBlock> block_list_;
  RmsNorm final_norm_{nullptr};
  torch::nn::Linear final_ada_{nullptr};  // -> shift, scale (zero-init)
  torch::nn::Linear out_proj_{nullptr};   // zero-init
  FlowHead flow_head_{nullptr};
};
TORCH_MODULE(Dart);

// What `model` is and accepts (model/model_info.h): conditioning, classes, geometry, steps,
// parameter count and the request limits every DART model declares. No class names (a checkpoint
// may carry them: DescribeCheckpoint) and a default guidance of 1. The geometry is that of the
// images the model makes: for a latent model the pixel size and channels (config.pixel_size(),
// pixel_channels()), not the latent grid. The parameters are DART's own, the autoencoder's not
// counted.
ModelInfo DescribeModel(const Dart& model);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_DART_H_
