// PNG encoding and decoding (8-bit gray and RGB) to and from memory, with libpng. Thread-safe.
#ifndef DARTSERVE_COMMON_PNG_H_
#define DARTSERVE_COMMON_PNG_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/pixels.h"

namespace dartserve {

// INVALID_ARGUMENT for a bad size or channel count.
absl::StatusOr<std::string> EncodePng(const Pixels& pixels);
// Decodes to 8-bit gray or RGB (palette, 16-bit and alpha inputs are converted).
// INVALID_ARGUMENT for data that is not a PNG or is larger than `max_pixels`.
absl::StatusOr<Pixels> DecodePng(std::string_view png, int64_t max_pixels = 1 << 26);

}  // namespace dartserve

#endif  // DARTSERVE_COMMON_PNG_H_
