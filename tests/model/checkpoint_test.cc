#include "model/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/file_io.h"
#include "model/engine_factory.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::model {
namespace {

using dartserve::testing::MakeTinyModel;
using ::testing::HasSubstr;
using ::testing::Not;

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

// classes.txt and prompts.txt describe a checkpoint to clients; each is checked against the model.
TEST_F(CheckpointTest, DescribeCheckpointReadsClassNamesAndExamplePrompts) {
  Dart text = MakeTinyModel(testing::TinyTextConfig());
  ASSERT_TRUE(SaveCheckpoint(dir_.string(), text).ok());
  absl::StatusOr<ModelInfo> info = DescribeCheckpoint(dir_.string(), text);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->example_prompts.empty());
  WriteText(kExamplePromptsFile, "a red circle\n\n  blue square, bottom right  \n");
  info = DescribeCheckpoint(dir_.string(), text);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->example_prompts,
            (std::vector<std::string>{"a red circle", "blue square, bottom right"}));
  std::string many;
  for (int i = 0; i <= kMaxExamplePrompts; ++i) many += "prompt\n";
  WriteText(kExamplePromptsFile, many);
  EXPECT_THAT(std::string(DescribeCheckpoint(dir_.string(), text).status().message()),
              HasSubstr("prompts.txt"));
  WriteText(kExamplePromptsFile, std::string(3000, 'a'));
  EXPECT_FALSE(DescribeCheckpoint(dir_.string(), text).ok());

  // A class model takes no prompt, and its class names must number its classes.
  Dart cls = MakeTinyModel();
  EXPECT_THAT(std::string(DescribeCheckpoint(dir_.string(), cls).status().message()),
              HasSubstr("takes no prompt"));
  std::filesystem::remove(dir_ / kExamplePromptsFile);
  WriteText(kClassNamesFile, "a\nb\n");
  EXPECT_THAT(std::string(DescribeCheckpoint(dir_.string(), cls).status().message()),
              HasSubstr("2 names for"));
}

// The default guidance: serving.json's, else kDefaultGuidance for conditional models and 1 for
// unconditional ones; a bad file is an error naming it and the field.
TEST_F(CheckpointTest, DescribeCheckpointReadsTheServedGuidance) {
  Dart cls = MakeTinyModel();
  ASSERT_TRUE(SaveCheckpoint(dir_.string(), cls).ok());
  absl::StatusOr<ModelInfo> info = DescribeCheckpoint(dir_.string(), cls);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->default_guidance, kDefaultGuidance);
  WriteText(kServingFile, R"({"guidance": 3.5})");
  info = DescribeCheckpoint(dir_.string(), cls);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->default_guidance, 3.5f);
  for (const char* bad : {R"({"guidance": 0})", R"({"guidance": 1e9})", R"({"guidance": "3"})",
                          R"({"guidence": 3})", "[3]", "{"}) {
    WriteText(kServingFile, bad);
    const absl::Status s = DescribeCheckpoint(dir_.string(), cls).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()), HasSubstr("serving.json")) << bad;
  }
  WriteText(kServingFile, R"({"guidence": 3})");
  EXPECT_THAT(std::string(DescribeCheckpoint(dir_.string(), cls).status().message()),
              HasSubstr("guidence: unknown field"));

  ModelConfig c = ModelConfig::Tiny();
  c.conditioning = Conditioning::kNone;
  Dart unconditional = MakeTinyModel(c);
  EXPECT_THAT(std::string(DescribeCheckpoint(dir_.string(), unconditional).status().message()),
              HasSubstr("unconditional"));
  std::filesystem::remove(dir_ / kServingFile);
  info = DescribeCheckpoint(dir_.string(), unconditional);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->default_guidance, 1.0f);
}

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

// Latent models (docs/model.md, "Latent DART"): DART on the 4x4x4 latents of the tiny autoencoder
// (16x16 RGB, f = 4), patch 1 (K = 16).
ModelConfig TinyLatentConfig() {
  ModelConfig c = ModelConfig::Tiny();
  c.image_size = 4;
  c.channels = 4;
  c.patch_size = 1;
  c.autoencoder = "runs/tiny-autoencoder/ema";  // a training path; the checkpoint names its own
  c.autoencoder_downsample = 4;
  return c;
}

Autoencoder TinyAutoencoder(AutoencoderConfig config = AutoencoderConfig::Tiny()) {
  torch::manual_seed(11);
  Autoencoder ae(config);
  ae->eval();
  return ae;
}

class LatentCheckpointTest : public CheckpointTest {
 protected:
  // Saves a tiny latent model with its autoencoder to dir_.
  Dart SaveLatent() {
    Dart model = MakeTinyModel(TinyLatentConfig());
    model->set_autoencoder(TinyAutoencoder());
    const absl::Status s = SaveCheckpoint(dir_.string(), model);
    EXPECT_TRUE(s.ok()) << s;
    return model;
  }
  std::string AutoencoderDir() const { return (dir_ / kCheckpointAutoencoder).string(); }
};

TEST_F(LatentCheckpointTest, RoundTripCarriesTheAutoencoder) {
  Dart model = SaveLatent();
  absl::StatusOr<std::string> json = ReadFile((dir_ / kConfigFile).string());
  ASSERT_TRUE(json.ok());
  EXPECT_THAT(*json, HasSubstr(R"("autoencoder": "autoencoder")"));
  EXPECT_THAT(*json, HasSubstr(R"("autoencoder_downsample": 4)"));
  EXPECT_TRUE(std::filesystem::exists(dir_ / kCheckpointAutoencoder / kWeightsFile));

  absl::StatusOr<Dart> loaded = LoadCheckpoint(dir_.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(torch::equal(Predict(model), Predict(*loaded)));
  Autoencoder ae = (*loaded)->autoencoder();
  ASSERT_TRUE(ae);
  for (const torch::Tensor& p : ae->parameters()) EXPECT_FALSE(p.requires_grad());
  torch::NoGradGuard no_grad;
  const torch::Tensor z = torch::randn({1, 4, 4, 4});
  EXPECT_TRUE(torch::equal(model->autoencoder()->Decode(z), ae->Decode(z)));
  // Saving the loaded model again names the same subfolder.
  EXPECT_EQ((*loaded)->config().autoencoder, kCheckpointAutoencoder);
}

TEST_F(LatentCheckpointTest, DescribeModelReportsThePixelSize) {
  const ModelInfo info = DescribeModel(MakeTinyModel(TinyLatentConfig()));
  EXPECT_EQ(info.image_size, 16);
  EXPECT_EQ(info.channels, 3);
  const ModelInfo pixel = DescribeModel(MakeTinyModel());
  EXPECT_EQ(pixel.image_size, 8);
  EXPECT_EQ(pixel.channels, 1);
}

TEST_F(LatentCheckpointTest, MissingAutoencoderIsRefused) {
  SaveLatent();
  std::filesystem::remove_all(AutoencoderDir());
  const std::string e = Error();
  EXPECT_THAT(e, HasSubstr(AutoencoderDir()));
  EXPECT_THAT(e, HasSubstr("missing"));
}

TEST_F(LatentCheckpointTest, AutoencoderThatDoesNotFitIsRefused) {
  SaveLatent();
  AutoencoderConfig eight = AutoencoderConfig::Tiny();
  eight.latent_channels = 8;
  Autoencoder other = TinyAutoencoder(eight);
  ASSERT_TRUE(SaveAutoencoder(AutoencoderDir(), other).ok());
  std::string e = Error();
  EXPECT_THAT(e, HasSubstr(AutoencoderDir()));
  EXPECT_THAT(e, HasSubstr("latent_channels is 8 but the model's channels is 4"));

  AutoencoderConfig big = AutoencoderConfig::Tiny();
  big.image_size = 32;  // 8x8 latents
  other = TinyAutoencoder(big);
  ASSERT_TRUE(SaveAutoencoder(AutoencoderDir(), other).ok());
  e = Error();
  EXPECT_THAT(e, HasSubstr("latent size (image_size / f) is 8 but the model's image_size is 4"));
}

TEST_F(LatentCheckpointTest, ConfigMustNameTheSubfolder) {
  SaveLatent();
  WriteText(kConfigFile, ModelConfigToJson(TinyLatentConfig()));  // the training path
  const std::string e = Error();
  EXPECT_THAT(e, HasSubstr("config.json"));
  EXPECT_THAT(e, HasSubstr("runs/tiny-autoencoder/ema"));
}

TEST_F(LatentCheckpointTest, SavingNeedsTheAutoencoder) {
  Dart model = MakeTinyModel(TinyLatentConfig());
  EXPECT_EQ(SaveCheckpoint(dir_.string(), model).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(LatentCheckpointTest, PixelCheckpointsAreUnchanged) {
  Dart model = MakeTinyModel();
  ASSERT_TRUE(SaveCheckpoint(dir_.string(), model).ok());
  EXPECT_FALSE(std::filesystem::exists(AutoencoderDir()));
  absl::StatusOr<std::string> json = ReadFile((dir_ / kConfigFile).string());
  ASSERT_TRUE(json.ok());
  EXPECT_THAT(*json, Not(HasSubstr("autoencoder")));
  absl::StatusOr<Dart> loaded = LoadCheckpoint(dir_.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE((*loaded)->autoencoder());
}

// The latent fields of config.json: checked together, written only for latent models.
TEST(LatentConfigTest, FieldsAreCheckedTogether) {
  const auto error = [](const std::string& json) {
    absl::StatusOr<ModelConfig> c = ModelConfigFromJson(json);
    return c.ok() ? std::string("ok") : std::string(c.status().message());
  };
  EXPECT_EQ(error(ModelConfigToJson(TinyLatentConfig())), "ok");
  EXPECT_THAT(error(R"({"channels": 4})"), HasSubstr("channels"));
  EXPECT_THAT(error(R"({"autoencoder_downsample": 4})"), HasSubstr("autoencoder_downsample"));
  EXPECT_THAT(error(R"({"autoencoder": "ae", "channels": 4})"),
              HasSubstr("autoencoder_downsample"));
  EXPECT_THAT(error(R"({"autoencoder": "ae", "channels": 4, "autoencoder_downsample": 3})"),
              HasSubstr("power of two"));
  EXPECT_THAT(error(R"({"autoencoder": ""})"), HasSubstr("autoencoder: must be a non-empty"));
  EXPECT_THAT(error(R"({"autoencoder": 4})"), HasSubstr("autoencoder"));
  const ModelConfig c = TinyLatentConfig();
  EXPECT_EQ(c.pixel_size(), 16);
  EXPECT_EQ(c.pixel_channels(), 3);
  EXPECT_EQ(c.tokens_per_block(), 16);  // token maths on the latent grid
  EXPECT_EQ(c.token_dim(), 4);
}

// With lanes, LoadEngines loads on the first and wraps each replica's engine to run on its own;
// the count must match the replicas'.
TEST_F(CheckpointTest, LoadEnginesPutsEachReplicaOnItsLane) {
  Dart cls = MakeTinyModel();
  ASSERT_TRUE(SaveCheckpoint(dir_.string(), cls).ok());
  ReplicaOptions options{.replicas = 2};
  options.lanes = MakeLanes(options);
  ASSERT_EQ(options.lanes.size(), 2u);
  absl::StatusOr<std::vector<std::unique_ptr<Engine>>> engines =
      LoadEngines(dir_.string(), options);
  ASSERT_TRUE(engines.ok()) << engines.status();
  ASSERT_EQ(engines->size(), 2u);
  for (const std::unique_ptr<Engine>& engine : *engines) {
    absl::StatusOr<std::unique_ptr<EngineRequest>> request =
        engine->Start({.class_id = 1, .seed = 5});
    ASSERT_TRUE(request.ok()) << request.status();
    EngineRequest* const batch[] = {request->get()};
    while (!(*request)->finished()) ASSERT_TRUE(engine->Step(batch).ok());
    const RenderJob job{.request = request->get()};
    absl::StatusOr<std::vector<Pixels>> image =
        engine->Render(std::span<const RenderJob>(&job, 1), RenderKind::kDecoded);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->size(), 1u);
  }
  EXPECT_TRUE(MakeLanes({.replicas = 65}).empty());  // LoadEngines says why
  EXPECT_EQ(MakeLanes({.devices = {"cpu", "cpu", "cpu"}}).size(), 3u);
  options.lanes.pop_back();
  const absl::Status s = LoadEngines(dir_.string(), options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("lanes: 1 for 2 replicas"));
}

}  // namespace
}  // namespace dartserve::model
