#include "model/image.h"

#include <gtest/gtest.h>

#include "common/png.h"
#include "model/dart.h"

namespace dartserve::model {
namespace {

TEST(ImageTest, TensorPixelsRoundTrip) {
  const torch::Tensor img = torch::tensor({-1.0f, 0.0f, 1.0f, 2.0f}).view({1, 2, 2});
  const Pixels p = TensorToPixels(img);
  EXPECT_EQ(p.data, (std::vector<uint8_t>{0, 128, 255, 255}));  // clamped
  const torch::Tensor back = PixelsToTensor(p);
  EXPECT_NEAR(back[0][0][1].item<float>(), 128 / 127.5 - 1, 1e-6);
  absl::StatusOr<std::string> png = ImageToPng(img);
  ASSERT_TRUE(png.ok());
  EXPECT_EQ(DecodePng(*png)->data, p.data);
}

// The engine renders previews from patch tokens with plain loops; they must agree with the
// torch path (Unpatchify, then quantise; adaptive average pooling when downscaled).
TEST(ImageTest, TokensToPixelsMatchesTorchPath) {
  torch::manual_seed(3);
  for (const auto& [channels, patch, size] : {std::tuple{1, 4, 28}, {3, 2, 8}}) {
    const torch::Tensor images = torch::rand({1, channels, size, size}) * 2.4 - 1.2;
    const torch::Tensor tokens = Patchify(images, patch).contiguous();
    const std::span<const float> data(tokens.data_ptr<float>(), tokens.numel());
    const Pixels full = TokensToPixels(data, patch, channels, size);
    EXPECT_EQ(full.data, TensorToPixels(Unpatchify(tokens, patch, channels, size)[0]).data);
    for (const int side : {size / 2, 5}) {
      const Pixels small = TokensToPixels(data, patch, channels, size, side);
      ASSERT_EQ(small.width, side);
      ASSERT_EQ(small.height, side);
      const Pixels expected =
          TensorToPixels(torch::adaptive_avg_pool2d(images.clamp(-1, 1), {side, side})[0]);
      ASSERT_EQ(small.data.size(), expected.data.size());
      for (size_t i = 0; i < expected.data.size(); ++i) {
        EXPECT_NEAR(small.data[i], expected.data[i], 1) << "channels " << channels << " i " << i;
      }
    }
  }
}

TEST(ImageTest, GridAndUpscale) {
  const torch::Tensor a = torch::ones({3, 2, 2});
  const torch::Tensor grid = MakeGrid({a, a, a}, /*columns=*/2, /*pad=*/1);
  EXPECT_EQ(grid.sizes(), (std::vector<int64_t>{3, 7, 7}));
  EXPECT_EQ(grid[0][1][1].item<float>(), 1.0f);
  EXPECT_EQ(grid[0][0][0].item<float>(), -1.0f);
  EXPECT_EQ(grid[0][4][4].item<float>(), -1.0f);  // the empty fourth cell
  EXPECT_EQ(UpscaleNearest(a, 3).sizes(), (std::vector<int64_t>{3, 6, 6}));
}

}  // namespace
}  // namespace dartserve::model
