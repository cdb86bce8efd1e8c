#include "model/image.h"

#include <algorithm>
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
