// The image type every layer passes around: 8-bit pixels, gray or RGB, row-major. Torch-free, so
// the scheduler, the server and the clients use it without LibTorch.
#ifndef DARTSERVE_COMMON_PIXELS_H_
#define DARTSERVE_COMMON_PIXELS_H_

#include <cstdint>
#include <vector>

namespace dartserve {

struct Pixels {
  int width = 0;
  int height = 0;
  int channels = 0;           // 1 (gray) or 3 (RGB)
  std::vector<uint8_t> data;  // row-major, interleaved channels; width * height * channels bytes
};

}  // namespace dartserve

#endif  // DARTSERVE_COMMON_PIXELS_H_
