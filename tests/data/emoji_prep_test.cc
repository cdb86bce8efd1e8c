#include "data/emoji_prep.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "absl/strings/str_split.h"
#include "common/file_io.h"
#include "common/png.h"
#include "tests/data/emoji_fixture.h"

namespace dartserve::data {
namespace {

namespace fs = std::filesystem;

TEST(NormalizeEmojiNameTest, DropsSkinTonesAndUnifiesNames) {
  const std::vector<std::string> fluent = {"artist", "artist-dark", "artist-palette", "crescent"};
  EXPECT_EQ(NormalizeEmojiName("twemoji", "waving-hand-medium-dark-skin-tone", {}), "");
  EXPECT_EQ(NormalizeEmojiName("noto-v1", "women-wrestling-tone2", {}), "");
  EXPECT_EQ(NormalizeEmojiName("fluent-flat", "artist-dark", fluent), "");
  EXPECT_EQ(NormalizeEmojiName("fluent-flat", "artist-palette", fluent), "artist-palette");
  // "-dark" without its base name in the set is part of a name, not a skin tone.
  EXPECT_EQ(NormalizeEmojiName("fluent-flat", "moon-dark", fluent), "moon-dark");
  EXPECT_EQ(NormalizeEmojiName("streamline", "bird-2", {}), "bird");
  EXPECT_EQ(NormalizeEmojiName("twemoji", "bird-2", {}), "bird-2");
  EXPECT_EQ(NormalizeEmojiName("noto-v1", "flag-for-flag-france", {}), "flag-france");
  EXPECT_EQ(NormalizeEmojiName("emojione", "flag-for-france", {}), "flag-france");
}

TEST(RasterizeSvgTest, DrawsOnWhiteAtTheRequestedSize) {
  // The left half of the viewBox red: the left half of the image red, the right half white.
  absl::StatusOr<Pixels> px =
      RasterizeSvg(IconifySvg("<rect width=\"8\" height=\"16\" fill=\"#f00\"/>", 0, 0, 16, 16), 32);
  ASSERT_TRUE(px.ok()) << px.status();
  ASSERT_EQ(px->width, 32);
  ASSERT_EQ(px->height, 32);
  ASSERT_EQ(px->channels, 3);
  const auto at = [&](int x, int y, int c) { return px->data[(y * 32 + x) * 3 + c]; };
  EXPECT_EQ(at(4, 10, 0), 255);
  EXPECT_EQ(at(4, 10, 1), 0);
  EXPECT_EQ(at(28, 10, 0), 255);
  EXPECT_EQ(at(28, 10, 1), 255);
  EXPECT_EQ(at(28, 10, 2), 255);
}

TEST(RasterizeSvgTest, RefusesWhatIsNotSvg) {
  absl::StatusOr<Pixels> px = RasterizeSvg("<not svg", 16);
  EXPECT_EQ(px.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PrepareEmojiDataTest, WritesImagesIndexAndNotice) {
  const std::string npm = testing::WriteFakeEmojiPackages("emoji_prep");
  const std::string out = (fs::path(npm).parent_path() / "images").string();
  absl::StatusOr<EmojiPrepSummary> summary =
      PrepareEmojiData({.npm_dir = npm, .out_dir = out, .size = 16, .min_styles = 3});
  ASSERT_TRUE(summary.ok()) << summary.status();
  // red-apple in 7 styles, cat-face in 6; rocket (2 styles) is under min_styles.
  EXPECT_EQ(summary->concepts, 2);
  EXPECT_EQ(summary->images, 13);
  EXPECT_EQ(summary->dropped_variants, 7);
  EXPECT_EQ(summary->failed, 0);
  absl::StatusOr<std::string> index = ReadFile(out + "/index.tsv");
  ASSERT_TRUE(index.ok());
  std::vector<std::string> lines = absl::StrSplit(*index, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 14u);
  EXPECT_EQ(lines[0], "file\tconcept\tstyle\tcategory\tsplit\tlabel\tkeywords");
  std::map<std::string, int> held_out_per_concept;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> f = absl::StrSplit(lines[i], '\t');
    ASSERT_EQ(f.size(), 7u) << lines[i];
    EXPECT_TRUE(f[4] == "train" || f[4] == "heldout");
    held_out_per_concept[f[1]] += f[4] == "heldout";
    absl::StatusOr<std::string> png = ReadFile(out + "/" + f[0]);
    ASSERT_TRUE(png.ok()) << f[0];
    absl::StatusOr<Pixels> px = DecodePng(*png);
    ASSERT_TRUE(px.ok());
    EXPECT_EQ(px->width, 16);
    if (f[1] == "red-apple") {
      // Label and keywords from emojibase, category from the first set's metadata.
      EXPECT_EQ(f[5], "red apple");
      EXPECT_EQ(f[6], "apple;fruit;red");
      EXPECT_EQ(f[3], "Food & Drink");
    }
  }
  for (const auto& [concept_name, n] : held_out_per_concept) EXPECT_LE(n, 1) << concept_name;
  EXPECT_TRUE(fs::exists(out + "/NOTICE"));
}

TEST(PrepareEmojiDataTest, AMissingPackageIsNamed) {
  const std::string npm = testing::WriteFakeEmojiPackages("emoji_prep_missing");
  fs::remove_all(fs::path(npm) / "@iconify-json" / "noto");
  absl::StatusOr<EmojiPrepSummary> summary =
      PrepareEmojiData({.npm_dir = npm, .out_dir = npm + "/../out"});
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(summary.status().message().find("@iconify-json/noto"), std::string::npos);
}

}  // namespace
}  // namespace dartserve::data
