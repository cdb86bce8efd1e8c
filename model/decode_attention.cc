#include "model/decode_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/vector_math.h"

namespace dartserve::model {
namespace {

// One (row, head): out[d] = sum_j softmax(scale * q . k_j) v_j[d] over `length` keys; `scores`
// is scratch of at least `length` floats.
void AttendOne(const float* q, const float* k, const float* v, int64_t length, int64_t d,
               float scale, float* scores, float* out) {
  float max_score = -INFINITY;
  for (int64_t j = 0; j < length; ++j) {
    scores[j] = scale * Dot(q, k + j * d, d);
    max_score = std::max(max_score, scores[j]);
  }
  float total = 0;
  for (int64_t j = 0; j < length; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    total += scores[j];
  }
  std::fill(out, out + d, 0.0f);
  for (int64_t j = 0; j < length; ++j) {
    const float p = scores[j] / total;
    const float* vj = v + j * d;
    for (int64_t i = 0; i < d; ++i) out[i] += p * vj[i];
  }
}

}  // namespace

bool DecodeAttentionApplies(const torch::Tensor& q) {
  return q.dim() == 4 && q.size(2) == 1 && q.device().is_cpu() &&
         q.scalar_type() == torch::kFloat && !q.requires_grad();
}

torch::Tensor DecodeAttention(const torch::Tensor& q, std::span<const torch::Tensor> keys,
                              std::span<const torch::Tensor> values,
                              std::span<const int64_t> lengths) {
  TORCH_CHECK(DecodeAttentionApplies(q),
              "DecodeAttention: q must be [R, H, 1, d] fp32 on the CPU, without autograd");
  const int64_t rows = q.size(0), heads = q.size(1), d = q.size(3);
  TORCH_CHECK(static_cast<int64_t>(keys.size()) == rows &&
                  static_cast<int64_t>(values.size()) == rows &&
                  static_cast<int64_t>(lengths.size()) == rows,
              "DecodeAttention: one cache and length per row");
  int64_t max_length = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (const torch::Tensor* t : {&keys[r], &values[r]}) {
      TORCH_CHECK(t->dim() == 3 && t->size(0) == heads && t->size(2) == d && t->is_contiguous() &&
                      t->scalar_type() == torch::kFloat && t->device().is_cpu(),
                  "DecodeAttention: each cache must be [H, S, d] contiguous fp32 on the CPU");
    }
    TORCH_CHECK(lengths[r] >= 1 && lengths[r] <= keys[r].size(1),
                "DecodeAttention: a row's length must be within its cache");
    max_length = std::max(max_length, lengths[r]);
  }
  const torch::Tensor query = q.contiguous();
  torch::Tensor out = torch::empty({rows, heads, 1, d}, q.options());
  const float* q_data = query.data_ptr<float>();
  float* out_data = out.data_ptr<float>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  // Each task is one (row, head): a few hundred keys of d floats, so a grain of a few tasks.
  at::parallel_for(0, rows * heads, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(max_length);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / heads, h = task % heads;
      const int64_t stride = keys[r].size(1) * d;  // one head's cache
      AttendOne(q_data + task * d, keys[r].data_ptr<float>() + h * stride,
                values[r].data_ptr<float>() + h * stride, lengths[r], d, scale, scores.data(),
                out_data + task * d);
    }
  });
  return out;
}

}  // namespace dartserve::model
