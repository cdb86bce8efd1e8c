// Attention of one new token per row over that row's own KV cache, read where it lies.
//
// A token-at-a-time step (DART-AR) has one query per row and head against a few hundred cached
// keys: a matrix-vector product per (row, head). Through LibTorch that means stacking the rows'
// cache prefixes into one tensor and a batched matmul that packs them again, three passes over
// the cache and a dozen operator calls per layer; measured, it was 59 % of a DART-AR step
// (docs/performance.md, "Token-at-a-time attention"). This kernel reads every row's keys and
// values once, in place, with no copy and one call per layer.
#ifndef DARTSERVE_MODEL_DECODE_ATTENTION_H_
#define DARTSERVE_MODEL_DECODE_ATTENTION_H_

#include <torch/torch.h>

#include <span>

namespace dartserve::model {

// True when DecodeAttention can serve these queries: one query per row, fp32 on the CPU, no
// autograd.
bool DecodeAttentionApplies(const torch::Tensor& q);

// softmax(q k^T / sqrt(d)) v for each row r over the first lengths[r] keys of its own cache.
// q: [R, H, 1, d] fp32 on the CPU (DecodeAttentionApplies); keys[r], values[r]: [H, S, d]
// contiguous fp32 with lengths[r] <= S (the rest of each cache is never read). Returns
// [R, H, 1, d]. Equal to Attention() over the prefixes up to float rounding. Parallel over
// (row, head) on the calling thread's intra-op pool; no autograd.
torch::Tensor DecodeAttention(const torch::Tensor& q, std::span<const torch::Tensor> keys,
                              std::span<const torch::Tensor> values,
                              std::span<const int64_t> lengths);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_DECODE_ATTENTION_H_
