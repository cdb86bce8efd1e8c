// Fused CPU kernels for the elementwise parts of a DART block at inference.
//
// A sampling step of a small model is many small operators: at batch 1, fmnist-dart's step moves
// 49 tokens of 192 floats through each block, and every RMSNorm, modulation, rotary and gate was
// three to eleven LibTorch calls, each a dispatch and a pass over memory. These kernels do each
// of those groups in one pass over the data, parallel over tokens on the calling thread's
// intra-op pool (docs/performance.md, "Fused elementwise kernels").
//
// Each function returns an undefined tensor when its inputs are outside the fast path: autograd
// enabled (training keeps the differentiable operators), not fp32 on the CPU, or a layout the
// kernel does not take. The caller then runs the generic operators (model/layers.cc), so every
// device and dtype keeps working and the results agree up to float rounding (tested in
// tests/model/fused_cpu_test.cc against the generic formulas).
#ifndef DARTSERVE_MODEL_FUSED_CPU_H_
#define DARTSERVE_MODEL_FUSED_CPU_H_

#include <torch/torch.h>

namespace dartserve::model::fused {

// x * rsqrt(mean(x^2) + eps) * scale + shift over the last dim D of x [R, ..., D] (contiguous).
// scale and shift are [D] (shared by every token) or [R, 1, D] (per row: every token of row r
// uses row r); shift may be undefined (no shift).
torch::Tensor NormScaleShift(const torch::Tensor& x, double eps, const torch::Tensor& scale,
                             const torch::Tensor& shift);

// The attention queries and keys of a block: from the qkv projection [R, N, 3, H, hd]
// (contiguous), q and k each RMS-normalised over hd with their weight [hd] (eps), then rotated by
// the rotary tables cos, sin ([N, hd], or [R, 1, N, hd] when rows sit at different positions;
// Rotary in layers.h). Returns [2, R, H, N, hd] (q, then k), contiguous.
torch::Tensor QkNormRotary(const torch::Tensor& qkv, const torch::Tensor& q_weight,
                           const torch::Tensor& k_weight, double eps, const torch::Tensor& cos,
                           const torch::Tensor& sin);

// The gated residual of AdaLN-Zero: x + gate * y, x and y [R, N, D] (contiguous), gate [R, 1, D].
torch::Tensor GatedResidual(const torch::Tensor& x, const torch::Tensor& gate,
                            const torch::Tensor& y);

}  // namespace dartserve::model::fused

#endif  // DARTSERVE_MODEL_FUSED_CPU_H_
