// Version guards so the model builds against Debian's LibTorch 1.13 and against LibTorch 2.x.
// Only newer APIs with a plain fallback belong here.
#ifndef DARTSERVE_MODEL_TORCH_COMPAT_H_
#define DARTSERVE_MODEL_TORCH_COMPAT_H_

#include <torch/torch.h>
#include <torch/version.h>

#if TORCH_VERSION_MAJOR >= 2
#define DARTSERVE_HAS_SDPA 1
#else
#define DARTSERVE_HAS_SDPA 0
#endif

namespace dartserve::model {

// softmax(q k^T / sqrt(d) + mask) v over the last two dims. q: [..., Nq, d]; k, v: [..., Nk, d].
// `mask`, when defined, is bool and broadcastable to [..., Nq, Nk]; true means "may attend".
inline torch::Tensor Attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& mask = {}) {
#if DARTSERVE_HAS_SDPA
  return at::scaled_dot_product_attention(
      q, k, v, mask.defined() ? c10::optional<at::Tensor>(mask) : c10::nullopt);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * scale;
  if (mask.defined()) {
    scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
  }
  // Softmax in fp32 even when activations are lower precision.
  return torch::matmul(torch::softmax(scores, -1, torch::kFloat).to(v.scalar_type()), v);
#endif
}

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_TORCH_COMPAT_H_
