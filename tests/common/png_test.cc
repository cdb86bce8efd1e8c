#include "common/png.h"

#include <gtest/gtest.h>

namespace dartserve {
namespace {

TEST(PngTest, GrayAndRgbRoundTrip) {
  for (int channels : {1, 3}) {
    Pixels p{5, 3, channels, {}};
    for (int i = 0; i < 5 * 3 * channels; ++i) p.data.push_back(static_cast<uint8_t>(i * 17));
    absl::StatusOr<std::string> png = EncodePng(p);
    ASSERT_TRUE(png.ok()) << png.status();
    EXPECT_EQ(png->substr(1, 3), "PNG");
    absl::StatusOr<Pixels> back = DecodePng(*png);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->width, 5);
    EXPECT_EQ(back->height, 3);
    EXPECT_EQ(back->channels, channels);
    EXPECT_EQ(back->data, p.data);
  }
}

TEST(PngTest, RejectsBadInput) {
  EXPECT_FALSE(EncodePng(Pixels{0, 3, 1, {}}).ok());
  EXPECT_FALSE(EncodePng(Pixels{2, 2, 2, std::vector<uint8_t>(8)}).ok());
  EXPECT_FALSE(EncodePng(Pixels{2, 2, 1, std::vector<uint8_t>(3)}).ok());
  EXPECT_FALSE(DecodePng("definitely not a png").ok());
}

}  // namespace
}  // namespace dartserve
