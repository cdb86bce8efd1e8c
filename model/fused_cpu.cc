#include "model/fused_cpu.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "model/vector_math.h"

namespace dartserve::model::fused {
namespace {

// Inference in fp32 on the CPU: the only case these kernels take (fused_cpu.h).
bool Applies(const torch::Tensor& t) {
  return t.defined() && !at::GradMode::is_enabled() && t.device().is_cpu() &&
         t.scalar_type() == torch::kFloat;
}

// A [D] vector shared by every row, or a [R, 1, D] tensor of one vector per row, read in place:
// row r's vector starts at data + r * row_stride.
struct RowVectors {
  const float* data = nullptr;
  int64_t row_stride = 0;
};

// Whether t is a [d] vector or [rows, 1, d] per-row vectors with unit stride along d; fills `out`.
bool AsRowVectors(const torch::Tensor& t, int64_t rows, int64_t d, RowVectors& out) {
  if (!Applies(t)) return false;
  if (t.dim() == 1 && t.size(0) == d && t.stride(0) == 1) {
    out = {t.data_ptr<float>(), 0};
    return true;
  }
  if (t.dim() == 3 && t.size(0) == rows && t.size(1) == 1 && t.size(2) == d && t.stride(2) == 1) {
    out = {t.data_ptr<float>(), t.stride(0)};
    return true;
  }
  return false;
}

// Tokens per parallel task so that a task touches about LibTorch's grain of elements: small steps
// stay on one thread, as LibTorch's own elementwise kernels do.
int64_t TokenGrain(int64_t floats_per_token) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, floats_per_token));
}

// 1 / sqrt(mean(x^2) + eps) over d floats.
inline float InverseRms(const float* x, int64_t d, float eps) {
  return 1.0f / std::sqrt(Dot(x, x, d) / static_cast<float>(d) + eps);
}

}  // namespace

torch::Tensor NormScaleShift(const torch::Tensor& x, double eps, const torch::Tensor& scale,
                             const torch::Tensor& shift) {
  if (!Applies(x) || x.dim() < 2 || !x.is_contiguous() || x.numel() == 0) return {};
  const int64_t rows = x.size(0), d = x.size(-1);
  RowVectors scales, shifts;
  if (!AsRowVectors(scale, rows, d, scales)) return {};
  const bool has_shift = shift.defined();
  if (has_shift && !AsRowVectors(shift, rows, d, shifts)) return {};
  const int64_t tokens = x.numel() / d, tokens_per_row = tokens / rows;
  torch::Tensor out = torch::empty_like(x);
  const float* in = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, tokens, TokenGrain(d), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t r = t / tokens_per_row;
      const float* xt = in + t * d;
      float* yt = dst + t * d;
      const float inv = InverseRms(xt, d, e);
      const float* sc = scales.data + r * scales.row_stride;
      if (has_shift) {
        const float* sh = shifts.data + r * shifts.row_stride;
        for (int64_t i = 0; i < d; ++i) yt[i] = xt[i] * inv * sc[i] + sh[i];
      } else {
        for (int64_t i = 0; i < d; ++i) yt[i] = xt[i] * inv * sc[i];
      }
    }
  });
  return out;
}

torch::Tensor QkNormRotary(const torch::Tensor& qkv, const torch::Tensor& q_weight,
                           const torch::Tensor& k_weight, double eps, const torch::Tensor& cos,
                           const torch::Tensor& sin) {
  if (!Applies(qkv) || qkv.dim() != 5 || qkv.size(2) != 3 || !qkv.is_contiguous()) return {};
  const int64_t rows = qkv.size(0), n = qkv.size(1), heads = qkv.size(3), hd = qkv.size(4);
  if (hd % 2 != 0) return {};
  RowVectors qw, kw;
  if (!AsRowVectors(q_weight, 1, hd, qw) || qw.row_stride != 0) return {};
  if (!AsRowVectors(k_weight, 1, hd, kw) || kw.row_stride != 0) return {};
  // Tables: one row per token position, shared by all rows ([N, hd]) or per row ([R, 1, N, hd]).
  bool per_row = false;
  for (const torch::Tensor* table : {&cos, &sin}) {
    if (!Applies(*table) || !table->is_contiguous() || table->size(-1) != hd) return {};
    if (table->dim() == 2 && table->size(0) == n) continue;
    if (table->dim() == 4 && table->size(0) == rows && table->size(1) == 1 && table->size(2) == n) {
      per_row = true;
      continue;
    }
    return {};
  }
  if (cos.dim() != sin.dim()) return {};
  torch::Tensor out = torch::empty({2, rows, heads, n, hd}, qkv.options());
  const float* in = qkv.data_ptr<float>();
  const float* cos_data = cos.data_ptr<float>();
  const float* sin_data = sin.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, rows * n, TokenGrain(2 * heads * hd), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t r = t / n, pos = t % n;
      const float* c = cos_data + (per_row ? t : pos) * hd;
      const float* s = sin_data + (per_row ? t : pos) * hd;
      for (int64_t which = 0; which < 2; ++which) {
        const float* w = which == 0 ? qw.data : kw.data;
        for (int64_t h = 0; h < heads; ++h) {
          const float* x = in + ((t * 3 + which) * heads + h) * hd;
          float* y = dst + (((which * rows + r) * heads + h) * n + pos) * hd;
          const float inv = InverseRms(x, hd, e);
          // Pair (x0, x1) -> (x0 c - x1 s, x1 c + x0 s); the tables hold (c, c) and (-s, s).
          for (int64_t i = 0; i < hd; i += 2) {
            const float x0 = x[i] * inv * w[i], x1 = x[i + 1] * inv * w[i + 1];
            y[i] = x0 * c[i] + x1 * s[i];
            y[i + 1] = x1 * c[i + 1] + x0 * s[i + 1];
          }
        }
      }
    }
  });
  return out;
}

torch::Tensor GatedResidual(const torch::Tensor& x, const torch::Tensor& gate,
                            const torch::Tensor& y) {
  if (!Applies(x) || !Applies(y) || x.dim() != 3 || !x.is_contiguous() || !y.is_contiguous() ||
      x.sizes() != y.sizes()) {
    return {};
  }
  const int64_t rows = x.size(0), n = x.size(1), d = x.size(2);
  RowVectors gates;
  if (!AsRowVectors(gate, rows, d, gates) || gate.dim() != 3) return {};
  torch::Tensor out = torch::empty_like(x);
  const float* xs = x.data_ptr<float>();
  const float* ys = y.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, rows * n, TokenGrain(d), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* g = gates.data + (t / n) * gates.row_stride;
      const float* xt = xs + t * d;
      const float* yt = ys + t * d;
      float* out_t = dst + t * d;
      for (int64_t i = 0; i < d; ++i) out_t[i] = xt[i] + g[i] * yt[i];
    }
  });
  return out;
}

}  // namespace dartserve::model::fused
