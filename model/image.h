// Conversions between image tensors ([C, H, W] floats in [-1, 1]) and 8-bit pixels, plus the
// small layout helpers the tools need (grids, nearest-neighbour upscaling).
#ifndef DARTSERVE_MODEL_IMAGE_H_
#define DARTSERVE_MODEL_IMAGE_H_

#include <torch/torch.h>

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/png.h"

namespace dartserve::model {

// [C, H, W] in [-1, 1] (clamped) -> interleaved 8-bit pixels.
Pixels TensorToPixels(const torch::Tensor& image);
// Patch tokens of one image ([G*G, C*p*p] floats in [-1, 1], row-major, G = image_size / p, the
// layout Unpatchify inverts) -> interleaved 8-bit pixels, box-downscaled so the longer side is at
// most `max_side` (0: full size; the boxes are adaptive_avg_pool2d's). Plain loops, no torch
// ops: rendering a preview costs microseconds and no kernel launches on the engine thread.
// Full size quantises exactly like TensorToPixels(Unpatchify(tokens)).
Pixels TokensToPixels(std::span<const float> tokens, int patch, int channels, int image_size,
                      int max_side = 0);
// One square image ([C, size, size] floats in [-1, 1], contiguous CHW) -> interleaved 8-bit
// pixels, downscaled as TokensToPixels does (it is the one-patch case of it).
inline Pixels ImageToPixels(std::span<const float> image, int channels, int size,
                            int max_side = 0) {
  return TokensToPixels(image, /*patch=*/size, channels, size, max_side);
}
// Interleaved 8-bit pixels -> [C, H, W] in [-1, 1].
torch::Tensor PixelsToTensor(const Pixels& pixels);
// Shorthand for EncodePng(TensorToPixels(image)).
absl::StatusOr<std::string> ImageToPng(const torch::Tensor& image);

// Tiles equally sized [C, H, W] images row by row, `columns` per row, with `pad` pixels of
// background (-1, black) between and around them.
torch::Tensor MakeGrid(const std::vector<torch::Tensor>& images, int columns, int pad = 1);
// Nearest-neighbour upscaling of [C, H, W] by an integer factor >= 1.
torch::Tensor UpscaleNearest(const torch::Tensor& image, int factor);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_IMAGE_H_
