// Small float-vector helpers shared by the hand-written CPU kernels (decode_attention.cc,
// fused_cpu.cc).
#ifndef DARTSERVE_MODEL_VECTOR_MATH_H_
#define DARTSERVE_MODEL_VECTOR_MATH_H_

#include <cstdint>

namespace dartserve::model {

// a . b over n floats. Eight independent sums so the compiler can keep them in vector registers
// without reassociating one float sum (which it may not do without -ffast-math).
inline float Dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_VECTOR_MATH_H_
