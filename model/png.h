// PNG encoding and decoding (8-bit gray and RGB) to and from memory, with libpng.
#ifndef DARTSERVE_MODEL_PNG_H_
#define DARTSERVE_MODEL_PNG_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace dartserve::model {

struct Pixels {
  int width = 0;
  int height = 0;
  int channels = 0;           // 1 (gray) or 3 (RGB)
  std::vector<uint8_t> data;  // row-major, interleaved channels; width * height * channels bytes
};

// INVALID_ARGUMENT for a bad size or channel count.
absl::StatusOr<std::string> EncodePng(const Pixels& pixels);
// Decodes to 8-bit gray or RGB (palette, 16-bit and alpha inputs are converted).
// INVALID_ARGUMENT for data that is not a PNG or is larger than `max_pixels`.
absl::StatusOr<Pixels> DecodePng(std::string_view png, int64_t max_pixels = 1 << 26);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_PNG_H_
