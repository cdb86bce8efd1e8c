// Transformer building blocks of DART (docs/model.md, "Block"): Llama-style pre-RMSNorm blocks with
// QK-norm, 2-D rotary positions over (row, col), SwiGLU and AdaLN-Zero modulation.
//
// Blocks never see how attention context is assembled: the caller passes an `AttendFn` that turns
// the block's (q, k, v) for its new tokens into attention outputs. The teacher-forced path passes
// masked attention over the whole sequence; the sampling path passes attention over a KV cache.
// Both paths therefore share every other line of the block.
#ifndef DARTSERVE_MODEL_LAYERS_H_
#define DARTSERVE_MODEL_LAYERS_H_

#include <torch/torch.h>

#include <functional>
#include <utility>

#include "model/config.h"

namespace dartserve::model {

// q, k, v: [R, H, N, head_dim] for the N new tokens of R rows; returns [R, H, N, head_dim].
using AttendFn = std::function<torch::Tensor(const torch::Tensor& q, const torch::Tensor& k,
                                             const torch::Tensor& v)>;

// x * rsqrt(mean(x^2) + eps) over the last dim, in fp32, without a learned scale.
torch::Tensor RmsNormalize(const torch::Tensor& x, double eps);

// RmsNormalize(x) * weight.
class RmsNormImpl : public torch::nn::Module {
 public:
  explicit RmsNormImpl(int64_t dim, double eps = 1e-6);
  torch::Tensor forward(const torch::Tensor& x);
  const torch::Tensor& weight() const { return weight_; }
  double eps() const { return eps_; }

 private:
  double eps_;
  torch::Tensor weight_;
};
TORCH_MODULE(RmsNorm);

// Rotation tables for a set of token positions, broadcastable to the [..., N, head_dim] queries
// and keys of a block's attention: [N, head_dim] when every row has the same positions, or
// [R, 1, N, head_dim] (broadcast over heads) when rows differ.
struct Rotary {
  torch::Tensor cos;
  torch::Tensor sin;
  // Pair (x0, x1) rotates to (x0 c - x1 s, x0 s + x1 c) = x * cos + swap(x) * sin, with cos =
  // (c, c) and sin = (-s, s) per pair: few kernels per call, which matters for small steps.
  torch::Tensor Apply(const torch::Tensor& x) const;
};

// 2-D rotary embedding. The head dim is split in halves: the first rotates with the patch row, the
// second with the patch column. Tables are derived from the config (never stored in checkpoints,
// so they cannot go stale on load).
class Rope2d {
 public:
  explicit Rope2d(const ModelConfig& config);
  // Tables on `device` for raster positions inside a block (values in [0, K)): `positions` is a
  // CPU tensor, [N] (shared by every row) or [R, N]. Computed once per forward and reused by every
  // layer.
  Rotary Tables(const torch::Tensor& positions, const torch::Device& device) const;

 private:
  torch::Tensor cos_;  // [K, head_dim], fp32 on the CPU
  torch::Tensor sin_;
};
// AdaLN on an RMS-normalised input: RmsNormalize(x, eps) * scale + shift, shift and scale
// [R, 1, D] broadcast over tokens. `scale` is the norm's weight times (1 + the AdaLN scale), folded
// once per request (DartBlockImpl::Modulation): two fewer operators per norm and step.
torch::Tensor NormModulate(const torch::Tensor& x, double eps, const torch::Tensor& shift,
                           const torch::Tensor& scale);

// AdaLN-Zero's gated residual: x + gate * y, gate [R, 1, D] broadcast over the tokens of x, y
// [R, N, D].
torch::Tensor GatedResidual(const torch::Tensor& x, const torch::Tensor& gate,
                            const torch::Tensor& y);

// One block's view of the prompt (text models): the cross-attention keys and values of the prompt
// tokens, [R, H, Lt, head_dim] each, and the key mask broadcastable to [R, H, N, Lt] (true: a
// real token). Computed once per request (DartBlockImpl::CrossKeysValues), reused at every step.
struct CrossContext {
  torch::Tensor k;
  torch::Tensor v;
  torch::Tensor mask;
};

class DartBlockImpl : public torch::nn::Module {
 public:
  explicit DartBlockImpl(const ModelConfig& config);

  // The block's AdaLN-Zero shifts, scales and gates [R, 6 * D] for a condition vector cond
  // [R, D] (SiLU-activated), each scale with its norm's weight folded in (NormModulate). They
  // depend on the condition only, so a request computes them once (Condition) rather than at each
  // of its steps: for a token-at-a-time model this linear layer would otherwise be a third of
  // every step's matmul FLOPs.
  torch::Tensor Modulation(const torch::Tensor& cond);

  // x: [R, N, D] tokens; modulation: Modulation() of each row's condition; rotary: the tables for
  // the N tokens' positions; cross: the prompt for text models (required then), else null.
  // Order: self-attention, cross-attention to the prompt (text models), SwiGLU MLP.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& modulation,
                        const Rotary& rotary, const AttendFn& attend,
                        const CrossContext* cross = nullptr);

  // Text models: the cross-attention keys and values [R, H, Lt, head_dim] of prompt features
  // text_tokens [R, Lt, text_width] (k is QK-normalised; no rotary: the encoder has already
  // placed each token).
  std::pair<torch::Tensor, torch::Tensor> CrossKeysValues(const torch::Tensor& text_tokens);

 private:
  // q and k [2, R, H, N, hd] of the qkv projection [R, N, 3, H, hd]: QK-normalised and rotated.
  torch::Tensor QkNormRotary(const torch::Tensor& qkv, const Rotary& rotary);

  int64_t heads_;
  int64_t head_dim_;
  RmsNorm norm1_{nullptr}, norm2_{nullptr}, q_norm_{nullptr}, k_norm_{nullptr};
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr};
  torch::nn::Linear w_gate_up_{nullptr}, w_down_{nullptr};  // SwiGLU
  torch::nn::Linear ada_{nullptr};  // -> shift1, scale1, gate1, shift2, scale2, gate2 (zero-init)
  // Cross-attention (text models only; null otherwise). The output projection is zero-initialised
  // so a new block ignores the prompt until training finds it useful, as AdaLN-Zero does.
  RmsNorm cross_norm_{nullptr}, cross_q_norm_{nullptr}, cross_k_norm_{nullptr};
  torch::nn::Linear cross_q_{nullptr}, cross_kv_{nullptr}, cross_proj_{nullptr};
};
TORCH_MODULE(DartBlock);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_LAYERS_H_
