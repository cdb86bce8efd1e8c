#include "model/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/file_io.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::model {
namespace {

using dartserve::testing::MakeTinyModel;
using ::testing::HasSubstr;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
  }
  void WriteText(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  std::string Error() {
    absl::StatusOr<Dart> m = LoadCheckpoint(dir_.string());
    EXPECT_FALSE(m.ok());
    return std::string(m.status().message());
  }
  torch::Tensor Predict(Dart& m) {
    torch::NoGradGuard no_grad;
    torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
    const torch::Tensor x = torch::randn(
        {1, m->config().sequence_length(), m->config().token_dim()}, gen, torch::kFloat);
    return m->forward(x, torch::tensor({2}, torch::kLong));
  }
  std::filesystem::path dir_;
};

TEST_F(CheckpointTest, F32RoundTripIsExact) {
  Dart model = MakeTinyModel();
  ASSERT_TRUE(SaveCheckpoint(dir_.string(), model).ok());
  absl::StatusOr<Dart> loaded = LoadCheckpoint(dir_.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(torch::equal(Predict(model), Predict(*loaded)));
}

TEST_F(CheckpointTest, HalfPrecisionWeightsLoadAsFloat) {
  Dart model = MakeTinyModel();
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    ASSERT_TRUE(SaveCheckpoint(dir_.string(), model, dtype).ok());
    absl::StatusOr<Dart> loaded = LoadCheckpoint(dir_.string());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const torch::Tensor a = Predict(model), b = Predict(*loaded);
    EXPECT_FALSE(torch::equal(a, b));
    EXPECT_LE((a - b).abs().max().item<double>(), 0.1 * a.abs().max().item<double>())
        << DTypeName(dtype);
  }
}

TEST_F(CheckpointTest, ShapeMismatchNamesTensor) {
  Dart model = MakeTinyModel();
  ASSERT_TRUE(SaveCheckpoint(dir_.string(), model).ok());
  ModelConfig wider = ModelConfig::Tiny();
  wider.width = 64;
  WriteText(kConfigFile, ModelConfigToJson(wider));
  EXPECT_THAT(Error(), HasSubstr("has shape"));
}

TEST_F(CheckpointTest, MissingAndUnexpectedTensors) {
  Dart model = MakeTinyModel();
  std::vector<TensorToWrite> tensors = WeightsToWrite(*model, DType::kF32);
  std::filesystem::create_directories(dir_);
  WriteText(kConfigFile, ModelConfigToJson(model->config()));

  std::vector<TensorToWrite> missing(tensors.begin() + 1, tensors.end());
  ASSERT_TRUE(
      WriteFileAtomically((dir_ / kWeightsFile).string(), *SerializeSafetensors(missing)).ok());
  EXPECT_THAT(Error(), HasSubstr("missing tensor '" + tensors[0].name + "'"));

  std::vector<TensorToWrite> extra = tensors;
  extra.push_back({"stray.weight", DType::kF32, {1}, std::string(4, '\0')});
  ASSERT_TRUE(
      WriteFileAtomically((dir_ / kWeightsFile).string(), *SerializeSafetensors(extra)).ok());
  EXPECT_THAT(Error(), HasSubstr("unexpected tensor 'stray.weight'"));
}

TEST_F(CheckpointTest, BadConfigAndMissingFiles) {
  EXPECT_THAT(Error(), HasSubstr("config.json"));
  std::filesystem::create_directories(dir_);
  WriteText(kConfigFile, R"({"depth": -2})");
  const std::string e = Error();
  EXPECT_THAT(e, HasSubstr("config.json"));
  EXPECT_THAT(e, HasSubstr("depth"));
  WriteText(kConfigFile, ModelConfigToJson(ModelConfig::Tiny()));
  EXPECT_THAT(Error(), HasSubstr("model.safetensors"));
  WriteText(kWeightsFile, "garbage");
  EXPECT_THAT(Error(), HasSubstr("truncated"));
}

}  // namespace
}  // namespace dartserve::model
