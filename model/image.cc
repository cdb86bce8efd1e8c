#include "model/image.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace dartserve::model {

Pixels TensorToPixels(const torch::Tensor& image) {
  torch::NoGradGuard no_grad;
  const torch::Tensor u8 =
      ((image.detach().to(torch::kCPU, torch::kFloat).clamp(-1, 1) + 1) * 127.5)
          .round()
          .to(torch::kUInt8)
          .permute({1, 2, 0})
          .contiguous();
  Pixels out;
  out.channels = static_cast<int>(image.size(0));
  out.height = static_cast<int>(image.size(1));
  out.width = static_cast<int>(image.size(2));
  out.data.resize(u8.numel());
  std::memcpy(out.data.data(), u8.data_ptr(), out.data.size());
  return out;
}

Pixels TokensToPixels(std::span<const float> tokens, int patch, int channels, int image_size,
                      int max_side) {
  const int g = image_size / patch;
  TORCH_CHECK(g * patch == image_size &&
                  tokens.size() == static_cast<size_t>(channels) * image_size * image_size,
              "TokensToPixels: token count does not match the image geometry");
  // Value of channel c at pixel (y, x): token (y / p, x / p), feature (c, y % p, x % p).
  auto at = [&](int c, int y, int x) {
    const size_t token = static_cast<size_t>(y / patch) * g + x / patch;
    const size_t feature = (static_cast<size_t>(c) * patch + y % patch) * patch + x % patch;
    return std::clamp(tokens[token * channels * patch * patch + feature], -1.0f, 1.0f);
  };
  int out_h = image_size, out_w = image_size;
  if (max_side > 0 && image_size > max_side) out_h = out_w = max_side;
  Pixels out{.width = out_w, .height = out_h, .channels = channels};
  out.data.resize(static_cast<size_t>(out_h) * out_w * channels);
  for (int oy = 0; oy < out_h; ++oy) {
    const int y0 = oy * image_size / out_h, y1 = ((oy + 1) * image_size + out_h - 1) / out_h;
    for (int ox = 0; ox < out_w; ++ox) {
      const int x0 = ox * image_size / out_w, x1 = ((ox + 1) * image_size + out_w - 1) / out_w;
      for (int c = 0; c < channels; ++c) {
        float sum = 0;
        for (int y = y0; y < y1; ++y) {
          for (int x = x0; x < x1; ++x) sum += at(c, y, x);
        }
        // Same float operations as TensorToPixels: (v + 1) * 127.5, rounded half to even.
        const float v = (sum / static_cast<float>((y1 - y0) * (x1 - x0)) + 1.0f) * 127.5f;
        out.data[(static_cast<size_t>(oy) * out_w + ox) * channels + c] =
            static_cast<uint8_t>(std::clamp(std::nearbyint(v), 0.0f, 255.0f));
      }
    }
  }
  return out;
}

torch::Tensor PixelsToTensor(const Pixels& pixels) {
  torch::Tensor t = torch::empty({pixels.height, pixels.width, pixels.channels}, torch::kUInt8);
  std::memcpy(t.data_ptr(), pixels.data.data(), pixels.data.size());
  return t.permute({2, 0, 1}).to(torch::kFloat) / 127.5 - 1;
}

absl::StatusOr<std::string> ImageToPng(const torch::Tensor& image) {
  return EncodePng(TensorToPixels(image));
}

torch::Tensor MakeGrid(const std::vector<torch::Tensor>& images, int columns, int pad) {
  TORCH_CHECK(!images.empty() && columns >= 1, "MakeGrid needs images and columns >= 1");
  const int64_t c = images[0].size(0), h = images[0].size(1), w = images[0].size(2);
  const int64_t n = static_cast<int64_t>(images.size());
  const int64_t cols = std::min<int64_t>(columns, n);
  const int64_t rows = (n + cols - 1) / cols;
  torch::Tensor grid =
      torch::full({c, rows * (h + pad) + pad, cols * (w + pad) + pad}, -1.0f, torch::kFloat);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = pad + (i / cols) * (h + pad), x = pad + (i % cols) * (w + pad);
    grid.narrow(1, y, h).narrow(2, x, w).copy_(images[i].detach().to(torch::kCPU, torch::kFloat));
  }
  return grid;
}

torch::Tensor UpscaleNearest(const torch::Tensor& image, int factor) {
  if (factor <= 1) return image;
  return image.repeat_interleave(factor, 1).repeat_interleave(factor, 2);
}

}  // namespace dartserve::model
