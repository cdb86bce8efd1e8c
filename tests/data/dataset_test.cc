#include "data/dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/file_io.h"
#include "common/png.h"
#include "model/safetensors.h"

namespace dartserve::data {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

TEST(FashionMnistTest, LoadsBothSplits) {
  auto train = LoadFashionMnist("train");
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ(train->size(), 60000);
  EXPECT_EQ(train->images.sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(train->num_classes, 10);
  EXPECT_EQ(torch::bincount(train->labels).min().item<int64_t>(), 6000);  // balanced classes
  auto test = LoadFashionMnist("test");
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_EQ(test->size(), 10000);
  auto [x, y] = test->Batch(torch::tensor({0, 1}, torch::kLong));
  EXPECT_GE(x.min().item<float>(), -1.0f);
  EXPECT_LE(x.max().item<float>(), 1.0f);
  EXPECT_EQ(y.size(0), 2);
}

TEST(FashionMnistTest, MissingFilesNameThePackage) {
  auto ds = LoadFashionMnist("train", "/nonexistent");
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(ds.status().message()), HasSubstr("dataset-fashion-mnist"));
  EXPECT_EQ(LoadFashionMnist("validation").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ImageFolderTest, LoadsPngsWithLabels) {
  const fs::path dir = fs::path(::testing::TempDir()) / "image_folder";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream labels(dir / "labels.txt");
  labels << "# file class\n";
  for (int i = 0; i < 3; ++i) {
    Pixels px{4, 4, 3, std::vector<uint8_t>(48, static_cast<uint8_t>(i * 100))};
    ASSERT_TRUE(
        WriteFileAtomically((dir / ("img" + std::to_string(i) + ".png")).string(), *EncodePng(px))
            .ok());
    labels << "img" << i << ".png " << (i == 2 ? 4 : i) << "\n";
  }
  labels.close();
  auto ds = LoadImageFolder(dir.string());
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->images.sizes(), (std::vector<int64_t>{3, 3, 4, 4}));
  EXPECT_EQ(ds->num_classes, 5);
  EXPECT_EQ(ds->images[1][2][3][3].item<uint8_t>(), 100);

  std::ofstream(dir / "labels.txt") << "img0.png notanumber\n";
  auto bad = LoadImageFolder(dir.string());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("labels.txt:1"));
}

}  // namespace
}  // namespace dartserve::data
