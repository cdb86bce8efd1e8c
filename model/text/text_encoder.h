// Text encoder for text-conditioned DART (docs/model.md, "Text conditioning"): prompt token ids ->
// per-token features (for cross-attention) and a pooled vector (for the AdaLN condition).
//
// The paper's recipe uses a frozen FLAN-T5 encoder; this project trains a small encoder from
// scratch with the model instead, because its captions are short and its vocabulary is the
// project's own SentencePiece model (model/text/tokenizer.h). Architecture, per ModelConfig's
// text_* fields: a token embedding [text_vocab_size, text_width], text_depth bidirectional
// pre-RMSNorm blocks (QK-RMSNorm, 1-D rotary positions on q and k, SwiGLU MLP with the model's
// mlp_ratio, residuals), then a final RmsNorm. The rotary base is the usual 1-D LM value 10000, not
// the config's rope_theta, which is tuned for the small 2-D image grid.
//
// Padding contract: `mask` marks the real tokens. Padding keys are masked out of attention and
// positions count real tokens only, so a prompt's real-token features and its pooled vector do not
// depend on how much padding surrounds it or what the padding ids are (up to float rounding).
// Every query may also attend to itself, so a row with no real tokens still has a non-empty
// softmax and stays finite. Padded positions of `TextFeatures::tokens` are exactly zero.
//
// The encoder is a plain module (fp32, any device its parameters are on); it does not validate the
// config (call ModelConfig::Validate()). DART owns one per text model (model/dart.h).
#ifndef DARTSERVE_MODEL_TEXT_TEXT_ENCODER_H_
#define DARTSERVE_MODEL_TEXT_TEXT_ENCODER_H_

#include <torch/torch.h>

#include <vector>

#include "model/config.h"
#include "model/layers.h"

namespace dartserve::model {

// A batch of token-id rows padded to one length.
struct TextBatch {
  torch::Tensor tokens;  // [B, L] int64
  torch::Tensor mask;    // [B, L] bool, true = real token
};

// Right-pads every row of `ids` with `pad_id` to L = max(longest row, min_length); CPU tensors.
// An empty row becomes an all-padding row. (Tokenizer::Encode never yields an empty row: the empty
// prompt is {BOS, EOS}.)
TextBatch PadBatch(const std::vector<std::vector<int>>& ids, int pad_id, int min_length = 0);

struct TextFeatures {
  torch::Tensor tokens;  // [B, L, text_width]; zero at padded positions
  torch::Tensor mask;    // [B, L] bool, the input mask (for the cross-attention keys)
  torch::Tensor pooled;  // [B, text_width]: mean of `tokens` over real positions; 0 if none
};

// One bidirectional encoder block: x + Attn(norm1(x)), then + SwiGLU(norm2(.)). Internal to
// TextEncoder; declared here only because registered submodules need complete types.
class TextBlockImpl : public torch::nn::Module {
 public:
  explicit TextBlockImpl(const ModelConfig& config);
  // x: [B, L, D]; rotary: tables for the L positions; attn_mask: bool, broadcastable to
  // [B, H, L, L], true = may attend.
  torch::Tensor forward(const torch::Tensor& x, const Rotary& rotary,
                        const torch::Tensor& attn_mask);

 private:
  int64_t heads_;
  int64_t head_dim_;
  RmsNorm norm1_{nullptr}, norm2_{nullptr}, q_norm_{nullptr}, k_norm_{nullptr};
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr};
  torch::nn::Linear w_gate_up_{nullptr}, w_down_{nullptr};  // SwiGLU
};
TORCH_MODULE(TextBlock);

class TextEncoderImpl : public torch::nn::Module {
 public:
  // Uses the config's text_* fields and mlp_ratio; they must satisfy ModelConfig::Validate()'s
  // text checks.
  explicit TextEncoderImpl(const ModelConfig& config);

  // tokens: [B, L] int64 ids in [0, text_vocab_size); mask: [B, L] bool, true = real token, with
  // L <= text_max_tokens. Real tokens need not be contiguous: the k-th real token of a row gets
  // rotary position k. Throws c10::Error on wrong shapes, dtypes or lengths.
  TextFeatures forward(const torch::Tensor& tokens, const torch::Tensor& mask);

  int64_t width() const { return width_; }
  int64_t max_tokens() const { return max_tokens_; }

 private:
  int64_t width_;
  int64_t max_tokens_;
  torch::nn::Embedding embed_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};
  RmsNorm norm_{nullptr};
  // Rotary tables for positions [0, text_max_tokens): [max_tokens, head_dim] fp32 CPU. Derived
  // from the config and never stored in checkpoints (as Rope2d).
  torch::Tensor rope_cos_;
  torch::Tensor rope_sin_;
};
TORCH_MODULE(TextEncoder);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_TEXT_TEXT_ENCODER_H_
