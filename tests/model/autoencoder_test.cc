#include "model/autoencoder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <vector>

#include "common/file_io.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::model {
namespace {

using ::testing::HasSubstr;

torch::Generator Gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// Tiny() with four levels: f = 8, so 16x16 images have 2x2 latents.
AutoencoderConfig TinyF8() {
  AutoencoderConfig c = AutoencoderConfig::Tiny();
  c.width_mults = {1, 2, 2, 2};
  return c;
}

// Smooth random images in [-1, 1]: 4x4 colour cells upsampled, so there is structure to learn.
torch::Tensor SmoothImages(int n, int size, uint64_t seed) {
  torch::Generator gen = Gen(seed);
  const torch::Tensor coarse = torch::rand({n, 3, size / 4, size / 4}, gen, torch::kFloat) * 2 - 1;
  return coarse.repeat_interleave(4, 2).repeat_interleave(4, 3);
}

// A tiny autoencoder with standard initialisation from a fixed seed.
Autoencoder MakeTiny(const AutoencoderConfig& config = AutoencoderConfig::Tiny(),
                     uint64_t seed = 1) {
  torch::manual_seed(seed);
  Autoencoder model(config);
  model->eval();
  return model;
}

std::string ErrorOf(const absl::Status& s) {
  EXPECT_FALSE(s.ok());
  return std::string(s.message());
}

// ---- Config ----

TEST(AutoencoderConfigTest, TinyIsValidWithFactorFour) {
  const AutoencoderConfig c = AutoencoderConfig::Tiny();
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  EXPECT_EQ(c.downsample_factor(), 4);
  EXPECT_EQ(c.latent_size(), 4);
  EXPECT_EQ(TinyF8().downsample_factor(), 8);
  EXPECT_TRUE(TinyF8().Validate().ok());
  EXPECT_TRUE(AutoencoderConfig().Validate().ok());  // the 64x64 default
  EXPECT_EQ(c.ResolvedScale(), std::vector<double>(4, 1.0));
  EXPECT_EQ(c.ResolvedShift(), std::vector<double>(4, 0.0));
  EXPECT_EQ(c.ResolvedPreviewWeight(), std::vector<double>(12, 0.0));
}

TEST(AutoencoderConfigTest, ValidateNamesTheField) {
  struct Case {
    void (*mutate)(AutoencoderConfig&);
    const char* field;
  };
  const Case cases[] = {
      {[](AutoencoderConfig& c) { c.channels = 1; }, "channels"},
      {[](AutoencoderConfig& c) { c.latent_channels = 3; }, "latent_channels"},
      {[](AutoencoderConfig& c) { c.latent_channels = 17; }, "latent_channels"},
      {[](AutoencoderConfig& c) {
         c.width_mults = {1, 2};
       },
       "width_mults"},
      {[](AutoencoderConfig& c) {
         c.width_mults = {1, 2, 2, 2, 2};
       },
       "width_mults"},
      {[](AutoencoderConfig& c) {
         c.width_mults = {1, 0, 2};
       },
       "width_mults"},
      {[](AutoencoderConfig& c) { c.image_size = 18; }, "image_size"},
      {[](AutoencoderConfig& c) { c.num_res_blocks = 0; }, "num_res_blocks"},
      {[](AutoencoderConfig& c) { c.norm_groups = 5; }, "norm_groups"},
      {[](AutoencoderConfig& c) { c.norm_groups = 0; }, "norm_groups"},
      {[](AutoencoderConfig& c) { c.base_width = 2; }, "base_width"},
      {[](AutoencoderConfig& c) { c.kl_weight = -1e-6; }, "kl_weight"},
      {[](AutoencoderConfig& c) {
         c.latent_shift = {0, 0, 0};
       },
       "latent_shift"},
      {[](AutoencoderConfig& c) {
         c.latent_scale = {1, 1, 0, 1};
       },
       "latent_scale[2]"},
      {[](AutoencoderConfig& c) {
         c.latent_scale = {1, 1, NAN, 1};
       },
       "latent_scale[2]"},
      {[](AutoencoderConfig& c) { c.preview_weight = std::vector<double>(4, 0.0); },
       "preview_weight"},
      {[](AutoencoderConfig& c) {
         c.preview_bias = {0, INFINITY, 0};
       },
       "preview_bias[1]"},
  };
  for (const Case& k : cases) {
    AutoencoderConfig c = AutoencoderConfig::Tiny();
    k.mutate(c);
    const absl::Status s = c.Validate();
    ASSERT_FALSE(s.ok()) << k.field;
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), ::testing::StartsWith(k.field)) << s;
  }
}

TEST(AutoencoderConfigTest, JsonRoundTripKeepsEveryField) {
  AutoencoderConfig c = TinyF8();
  c.latent_channels = 5;
  c.num_res_blocks = 2;
  c.kl_weight = 3e-6;
  c.latent_shift = {0.1, -1.0 / 3, 2.5, 0, 1e-9};
  c.latent_scale = {1.0 / 7, 2, 3, 4, 5};
  c.preview_weight = std::vector<double>(15, 0.0);
  for (int i = 0; i < 15; ++i) c.preview_weight[i] = std::sin(i + 0.5);
  c.preview_bias = {0.25, -0.5, 1.0 / 9};
  const std::string json = AutoencoderConfigToJson(c);
  EXPECT_THAT(json, HasSubstr(R"("kind": "autoencoder")"));
  absl::StatusOr<AutoencoderConfig> back = AutoencoderConfigFromJson(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->image_size, c.image_size);
  EXPECT_EQ(back->latent_channels, 5);
  EXPECT_EQ(back->base_width, c.base_width);
  EXPECT_EQ(back->width_mults, c.width_mults);
  EXPECT_EQ(back->num_res_blocks, 2);
  EXPECT_EQ(back->norm_groups, c.norm_groups);
  EXPECT_EQ(back->kl_weight, 3e-6);
  EXPECT_EQ(back->latent_shift, c.latent_shift);  // exact: doubles round-trip through JSON
  EXPECT_EQ(back->latent_scale, c.latent_scale);
  EXPECT_EQ(back->preview_weight, c.preview_weight);
  EXPECT_EQ(back->preview_bias, c.preview_bias);
  EXPECT_EQ(AutoencoderConfigToJson(*back), json);
}

TEST(AutoencoderConfigTest, UncalibratedConfigIsWrittenResolved) {
  absl::StatusOr<AutoencoderConfig> back =
      AutoencoderConfigFromJson(AutoencoderConfigToJson(AutoencoderConfig::Tiny()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->latent_scale, std::vector<double>(4, 1.0));
  EXPECT_EQ(back->preview_bias, std::vector<double>(3, 0.0));
}

TEST(AutoencoderConfigTest, JsonRejectsUnknownKeysBadValuesAndOtherKinds) {
  // Absent fields keep their defaults, so each case is a minimal object.
  const auto error = [](const std::string& json) {
    absl::StatusOr<AutoencoderConfig> c = AutoencoderConfigFromJson(json);
    EXPECT_FALSE(c.ok()) << json;
    return std::string(c.status().message());
  };
  EXPECT_TRUE(AutoencoderConfigFromJson(R"({"kind": "autoencoder"})").ok());
  EXPECT_THAT(error(R"({"kind": "autoencoder", "base_widht": 16})"),
              HasSubstr("base_widht: unknown config field"));
  EXPECT_THAT(error(R"({"kind": "autoencoder", "width_mults": [1, "two", 2]})"),
              HasSubstr("width_mults[1]: must be an integer"));
  EXPECT_THAT(error(R"({"kind": "autoencoder", "kl_weight": "small"})"),
              HasSubstr("kl_weight: must be a number"));
  EXPECT_THAT(error(R"({"kind": "autoencoder", "latent_channels": 2})"),
              HasSubstr("latent_channels"));
  EXPECT_THAT(error(R"({"image_size": 16})"), HasSubstr("kind: missing"));
  EXPECT_THAT(error(R"({"kind": "dart"})"), HasSubstr(R"(kind: "dart" is not "autoencoder")"));
  EXPECT_THAT(error(R"({"kind": 3})"), HasSubstr("kind: 3 is not"));
  // A DART config is refused for its kind, not for whichever of its fields comes first.
  EXPECT_THAT(error(ModelConfigToJson(ModelConfig::Tiny())),
              ::testing::StartsWith("kind: missing"));
  // And the other way round: DART's strict parser refuses an autoencoder config.
  EXPECT_FALSE(ModelConfigFromJson(AutoencoderConfigToJson(AutoencoderConfig::Tiny())).ok());
  EXPECT_THAT(error("[1, 2]"), HasSubstr("must be a JSON object"));
  EXPECT_THAT(error("{"), HasSubstr("not valid JSON"));
}

// ---- Shapes ----

class AutoencoderShapeTest : public ::testing::TestWithParam<int> {};

TEST_P(AutoencoderShapeTest, EncodeDecodeShapes) {
  const AutoencoderConfig config = GetParam() == 4 ? AutoencoderConfig::Tiny() : TinyF8();
  ASSERT_EQ(config.downsample_factor(), GetParam());
  Autoencoder model = MakeTiny(config);
  torch::NoGradGuard no_grad;
  const int64_t h = 16 / GetParam();
  const std::vector<int64_t> latent_shape{2, 4, h, h};
  const Posterior p = model->Encode(SmoothImages(2, 16, 3));
  EXPECT_EQ(p.mean.sizes(), latent_shape);
  EXPECT_EQ(p.logvar.sizes(), latent_shape);
  torch::Generator gen = Gen(4);
  const torch::Tensor z = model->Sample(p, gen);
  EXPECT_EQ(z.sizes(), latent_shape);
  EXPECT_EQ(model->Decode(z).sizes(), (std::vector<int64_t>{2, 3, 16, 16}));
  // Non-square, larger than the training size: the network is fully convolutional.
  const torch::Tensor wide = torch::zeros({1, 3, 16, 32});
  EXPECT_EQ(model->Decode(model->Encode(wide).mean).sizes(), wide.sizes());
  EXPECT_EQ(model->PreviewRgb(model->Normalize(z)).sizes(), (std::vector<int64_t>{2, 3, h, h}));
  for (PreviewUpsample mode : {PreviewUpsample::kNearest, PreviewUpsample::kBilinear}) {
    EXPECT_EQ(model->PreviewImage(z, mode).sizes(), (std::vector<int64_t>{2, 3, 16, 16}));
  }
}

INSTANTIATE_TEST_SUITE_P(Factors, AutoencoderShapeTest, ::testing::Values(4, 8),
                         [](const auto& info) { return "F" + std::to_string(info.param); });

TEST(AutoencoderTest, WrongShapesThrowNamingTheContract) {
  Autoencoder model = MakeTiny();
  torch::NoGradGuard no_grad;
  EXPECT_THROW(model->Encode(torch::zeros({1, 1, 16, 16})), c10::Error);
  EXPECT_THROW(model->Encode(torch::zeros({1, 3, 18, 18})), c10::Error);
  EXPECT_THROW(model->Decode(torch::zeros({1, 3, 4, 4})), c10::Error);
  try {
    model->Encode(torch::zeros({1, 1, 16, 16}));
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("Encode: images must be [B, 3, H, W]"));
  }
}

TEST(AutoencoderTest, LogvarIsClamped) {
  Autoencoder model = MakeTiny();
  torch::NoGradGuard no_grad;
  // conv_out's second half of channels is the log-variance.
  torch::Tensor bias = model->encoder()->named_parameters()["conv_out.bias"];
  bias.narrow(0, 4, 4).fill_(1000.0);
  EXPECT_EQ(model->Encode(SmoothImages(1, 16, 1)).logvar.max().item<double>(), 20.0);
  bias.narrow(0, 4, 4).fill_(-1000.0);
  EXPECT_EQ(model->Encode(SmoothImages(1, 16, 1)).logvar.min().item<double>(), -30.0);
}

TEST(AutoencoderTest, SampleFollowsThePosteriorAndTheGenerator) {
  Autoencoder model = MakeTiny();
  const Posterior p{torch::full({4, 4, 16, 16}, 0.5), torch::full({4, 4, 16, 16}, std::log(4.0))};
  torch::Generator a = Gen(7), b = Gen(7), c = Gen(8);
  const torch::Tensor za = model->Sample(p, a);
  EXPECT_TRUE(torch::equal(za, model->Sample(p, b)));
  EXPECT_FALSE(torch::equal(za, model->Sample(p, c)));
  EXPECT_NEAR(za.mean().item<double>(), 0.5, 0.1);
  EXPECT_NEAR(za.std().item<double>(), 2.0, 0.1);
}

// ---- KL and loss ----

TEST(AutoencoderLossTest, KlIsZeroAtThePriorAndPositiveElsewhere) {
  const torch::Tensor zeros = torch::zeros({2, 4, 3, 3});
  EXPECT_LT(KlDivergence({zeros, zeros}).abs().max().item<double>(), 1e-12);
  // Closed form for mean m, logvar 0: m^2 / 2 per element.
  const torch::Tensor kl_mean = KlDivergence({torch::full({2, 4, 3, 3}, 2.0), zeros});
  EXPECT_EQ(kl_mean.sizes(), (std::vector<int64_t>{2}));
  EXPECT_NEAR(kl_mean[0].item<double>(), 0.5 * 4.0 * 36, 1e-4);
  for (double logvar : {-1.0, 1.0}) {
    const double per_element = 0.5 * (std::exp(logvar) - 1 - logvar);
    EXPECT_NEAR(KlDivergence({zeros, torch::full({2, 4, 3, 3}, logvar)})[1].item<double>(),
                per_element * 36, 1e-4);
    EXPECT_GT(per_element, 0.0);
  }
}

TEST(AutoencoderLossTest, TermsAreReportedSeparatelyAndSumToTheLoss) {
  AutoencoderConfig config = AutoencoderConfig::Tiny();
  config.kl_weight = 0.5;  // large, so the KL term visibly counts
  Autoencoder model = MakeTiny(config);
  const torch::Tensor images = SmoothImages(3, 16, 5);
  torch::Generator g1 = Gen(9), g2 = Gen(9);
  const AutoencoderLoss a = ComputeAutoencoderLoss(model, images, g1);
  const AutoencoderLoss b = ComputeAutoencoderLoss(model, images, g2);
  EXPECT_EQ(a.loss.item<double>(), b.loss.item<double>());
  EXPECT_TRUE(a.loss.requires_grad());
  EXPECT_FALSE(a.l1.requires_grad());
  EXPECT_GT(a.l1.item<double>(), 0.0);
  EXPECT_GT(a.l2.item<double>(), 0.0);
  EXPECT_GT(a.kl.item<double>(), 0.0);
  EXPECT_NEAR(a.kl_term.item<double>(), 0.5 * a.kl.item<double>() / (3 * 16 * 16), 1e-6);
  EXPECT_NEAR(a.loss.item<double>(),
              a.l1.item<double>() + a.l2.item<double>() + a.kl_term.item<double>(), 1e-5);
}

// The tiny autoencoder must memorise a handful of images: the reconstruction loss (L1 + L2) falls
// at least 10x within a bounded number of CPU steps. Catches broken gradients, a disconnected
// skip or resampling path, and optimiser wiring.
TEST(AutoencoderTrainingTest, AdamCutsReconstructionLoss) {
  const auto start = std::chrono::steady_clock::now();
  Autoencoder model = MakeTiny(AutoencoderConfig::Tiny(), 0);
  model->train();
  const torch::Tensor images = SmoothImages(8, 16, 11);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(2e-3));
  torch::Generator gen = Gen(1);
  std::vector<double> recon;
  for (int step = 0; step < 300; ++step) {
    const AutoencoderLoss l = ComputeAutoencoderLoss(model, images, gen);
    opt.zero_grad();
    l.loss.backward();
    opt.step();
    recon.push_back(l.l1.item<double>() + l.l2.item<double>());
    ASSERT_TRUE(std::isfinite(l.loss.item<double>())) << "step " << step;
  }
  const auto mean = [&](size_t from, size_t n) {
    double s = 0;
    for (size_t i = from; i < from + n; ++i) s += recon[i];
    return s / n;
  };
  const double first = mean(0, 5), last = mean(recon.size() - 10, 10);
  EXPECT_GE(first / last, 10.0) << "first " << first << " last " << last;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[ timing ] 300 steps in " << seconds << " s; reconstruction " << first << " -> "
            << last << "\n";
}

// ---- Calibration ----

std::vector<torch::Tensor> CalibrationBatches() {
  return {SmoothImages(6, 16, 21), SmoothImages(5, 16, 22), SmoothImages(7, 16, 23)};
}

TEST(AutoencoderCalibrationTest, NormalizedLatentsHaveZeroMeanAndUnitStd) {
  Autoencoder model = MakeTiny();
  const std::vector<torch::Tensor> batches = CalibrationBatches();
  ASSERT_TRUE(MeasureLatentStats(model, batches).ok());
  const AutoencoderConfig& c = model->config();
  ASSERT_EQ(c.latent_shift.size(), 4u);
  // The untrained encoder's statistics are not already (0, 1), so the check below has teeth.
  double spread = 0;
  for (int i = 0; i < 4; ++i) {
    spread += std::abs(c.latent_shift[i]) + std::abs(std::log(c.latent_scale[i]));
  }
  EXPECT_GT(spread, 0.1);
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> normalized;
  for (const torch::Tensor& b : batches) {
    normalized.push_back(model->Normalize(model->Encode(b).mean));
  }
  const torch::Tensor all = torch::cat(normalized).to(torch::kDouble);
  const torch::Tensor mean = all.mean({0, 2, 3});
  const torch::Tensor std = all.std({0, 2, 3}, /*unbiased=*/false);
  EXPECT_LT(mean.abs().max().item<double>(), 1e-5) << mean;
  EXPECT_LT((std - 1).abs().max().item<double>(), 1e-4) << std;
  const torch::Tensor z = model->Encode(batches[0]).mean;
  EXPECT_TRUE(torch::allclose(model->Denormalize(model->Normalize(z)), z, 1e-5, 1e-5));
}

TEST(AutoencoderCalibrationTest, BadBatchesAreRefusedAndLeaveTheModelAlone) {
  Autoencoder model = MakeTiny();
  EXPECT_THAT(ErrorOf(MeasureLatentStats(model, {})), HasSubstr("none given"));
  const std::vector<torch::Tensor> bad = {SmoothImages(2, 16, 1), torch::zeros({2, 3, 10, 10})};
  EXPECT_THAT(ErrorOf(MeasureLatentStats(model, bad)), HasSubstr("image_batches[1]"));
  EXPECT_THAT(ErrorOf(FitModelPreviewMap(model, bad)), HasSubstr("image_batches[1]"));
  EXPECT_TRUE(model->config().latent_shift.empty());
  EXPECT_THAT(ErrorOf(model->SetLatentStats({0, 0, 0, 0}, {1, 1, -1, 1})),
              HasSubstr("latent_scale[2]"));
  EXPECT_TRUE(model->config().latent_scale.empty());
}

TEST(AutoencoderCalibrationTest, FitPreviewMapRecoversAKnownLinearMap) {
  torch::Generator gen = Gen(31);
  const torch::Tensor latents = torch::randn({6, 4, 5, 5}, gen, torch::kFloat);
  const torch::Tensor w = torch::randn({4, 3}, gen, torch::kFloat);
  const torch::Tensor bias = torch::tensor({0.3f, -0.2f, 0.1f});
  const torch::Tensor images =
      torch::einsum("nchw,ck->nkhw", {latents, w}) + bias.view({1, 3, 1, 1});
  absl::StatusOr<PreviewMap> map = FitPreviewMap(latents, images);
  ASSERT_TRUE(map.ok()) << map.status();
  ASSERT_EQ(map->weight.size(), 12u);
  ASSERT_EQ(map->bias.size(), 3u);
  for (int i = 0; i < 4; ++i) {
    for (int k = 0; k < 3; ++k) {
      EXPECT_NEAR(map->weight[i * 3 + k], w[i][k].item<double>(), 1e-4) << i << "," << k;
    }
  }
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(map->bias[k], bias[k].item<double>(), 1e-4);
  // Stored in a model, PreviewRgb reproduces the images.
  Autoencoder model = MakeTiny();
  ASSERT_TRUE(model->SetPreviewMap(*map).ok());
  EXPECT_TRUE(torch::allclose(model->PreviewRgb(latents), images, 1e-3, 1e-3));
}

TEST(AutoencoderCalibrationTest, FitPreviewMapSurvivesADeadChannel) {
  torch::Generator gen = Gen(32);
  torch::Tensor latents = torch::randn({4, 4, 3, 3}, gen, torch::kFloat);
  latents.select(1, 2).fill_(0.7f);  // constant: collinear with the bias column
  const torch::Tensor images = latents.narrow(1, 0, 3) * 0.5;
  absl::StatusOr<PreviewMap> map = FitPreviewMap(latents, images);
  ASSERT_TRUE(map.ok()) << map.status();
  Autoencoder model = MakeTiny();
  ASSERT_TRUE(model->SetPreviewMap(*map).ok());  // finite, so it validates
  EXPECT_TRUE(torch::allclose(model->PreviewRgb(latents), images, 1e-3, 1e-3));
  EXPECT_THAT(ErrorOf(FitPreviewMap(latents, images.narrow(2, 0, 2)).status()),
              HasSubstr("FitPreviewMap: need latents [N, c, h, w] and images [N, 3, h, w]"));
}

TEST(AutoencoderCalibrationTest, ModelPreviewMapBeatsTheMeanColour) {
  Autoencoder model = MakeTiny();
  const std::vector<torch::Tensor> batches = CalibrationBatches();
  ASSERT_TRUE(MeasureLatentStats(model, batches).ok());
  ASSERT_TRUE(FitModelPreviewMap(model, batches).ok());
  ASSERT_EQ(model->config().preview_weight.size(), 12u);
  torch::NoGradGuard no_grad;
  const torch::Tensor images = torch::cat(batches);
  const torch::Tensor target = torch::avg_pool2d(images, {4, 4});
  const torch::Tensor preview = model->PreviewRgb(model->Normalize(model->Encode(images).mean));
  // Least squares with a bias is never worse on its own data than the best constant colour.
  const double fit_error = (preview - target).pow(2).mean().item<double>();
  const double constant_error =
      (target - target.mean({0, 2, 3}, /*keepdim=*/true)).pow(2).mean().item<double>();
  EXPECT_LT(fit_error, constant_error);
}

// ---- Checkpoints ----

class AutoencoderCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("ae_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
  }
  std::string Error() {
    absl::StatusOr<Autoencoder> m = LoadAutoencoder(dir_.string());
    EXPECT_FALSE(m.ok());
    return std::string(m.status().message());
  }
  void WriteWeights(const std::vector<TensorToWrite>& tensors) {
    ASSERT_TRUE(
        WriteFileAtomically((dir_ / kWeightsFile).string(), *SerializeSafetensors(tensors)).ok());
  }
  // A calibrated tiny model with every parameter randomised (so equality is not vacuous).
  static Autoencoder Calibrated() {
    Autoencoder model = MakeTiny();
    dartserve::testing::RandomizeParameters(*model, 5, 0.1);
    const std::vector<torch::Tensor> batches = CalibrationBatches();
    EXPECT_TRUE(MeasureLatentStats(model, batches).ok());
    EXPECT_TRUE(FitModelPreviewMap(model, batches).ok());
    return model;
  }
  std::filesystem::path dir_;
};

TEST_F(AutoencoderCheckpointTest, RoundTripGivesIdenticalOutputs) {
  Autoencoder model = Calibrated();
  ASSERT_TRUE(SaveAutoencoder(dir_.string(), model).ok());
  absl::StatusOr<Autoencoder> loaded = LoadAutoencoder(dir_.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(AutoencoderConfigToJson((*loaded)->config()), AutoencoderConfigToJson(model->config()));
  torch::NoGradGuard no_grad;
  const torch::Tensor images = SmoothImages(2, 16, 41);
  const Posterior a = model->Encode(images), b = (*loaded)->Encode(images);
  EXPECT_TRUE(torch::equal(a.mean, b.mean));
  EXPECT_TRUE(torch::equal(a.logvar, b.logvar));
  EXPECT_TRUE(torch::equal(model->Decode(a.mean), (*loaded)->Decode(a.mean)));
  const torch::Tensor n = model->Normalize(a.mean);
  EXPECT_TRUE(torch::equal(n, (*loaded)->Normalize(a.mean)));
  EXPECT_TRUE(torch::equal(model->PreviewRgb(n), (*loaded)->PreviewRgb(n)));
  EXPECT_GT(model->PreviewRgb(n).abs().max().item<double>(), 0.0);
}

TEST_F(AutoencoderCheckpointTest, MissingExtraAndMisshapenTensorsAreNamed) {
  Autoencoder model = MakeTiny();
  ASSERT_TRUE(SaveAutoencoder(dir_.string(), model).ok());
  const std::vector<TensorToWrite> tensors = WeightsToWrite(*model, DType::kF32);

  WriteWeights({tensors.begin() + 1, tensors.end()});
  std::string e = Error();
  EXPECT_THAT(e, HasSubstr("missing tensor '" + tensors[0].name + "'"));
  EXPECT_THAT(e, HasSubstr(kWeightsFile));
  EXPECT_EQ(tensors[0].name, "encoder.conv_in.weight");

  std::vector<TensorToWrite> extra = tensors;
  extra.push_back({"stray.weight", DType::kF32, {1}, std::string(4, '\0')});
  WriteWeights(extra);
  EXPECT_THAT(Error(), HasSubstr("unexpected tensor 'stray.weight'"));

  std::vector<TensorToWrite> misshapen = tensors;
  misshapen[0].shape = {8, 3, 3, 6};  // same byte count as [16, 3, 3, 3]
  WriteWeights(misshapen);
  EXPECT_THAT(Error(), HasSubstr("tensor 'encoder.conv_in.weight' has shape [8, 3, 3, 6]"));

  // A config whose shapes differ from the weights is caught the same way.
  WriteWeights(tensors);
  ASSERT_TRUE(LoadAutoencoder(dir_.string()).ok());
  AutoencoderConfig wider = AutoencoderConfig::Tiny();
  wider.base_width = 24;
  ASSERT_TRUE(
      WriteFileAtomically((dir_ / kConfigFile).string(), AutoencoderConfigToJson(wider)).ok());
  EXPECT_THAT(Error(), HasSubstr("has shape"));
}

TEST_F(AutoencoderCheckpointTest, DartCheckpointIsRefusedByKind) {
  Dart dart = dartserve::testing::MakeTinyModel();
  ASSERT_TRUE(SaveCheckpoint(dir_.string(), dart).ok());
  const std::string e = Error();
  EXPECT_THAT(e, HasSubstr(kConfigFile));
  EXPECT_THAT(e, HasSubstr("kind: missing"));
  // And DART's loader refuses an autoencoder folder.
  std::filesystem::remove_all(dir_);
  Autoencoder model = MakeTiny();
  ASSERT_TRUE(SaveAutoencoder(dir_.string(), model).ok());
  absl::StatusOr<Dart> as_dart = LoadCheckpoint(dir_.string());
  ASSERT_FALSE(as_dart.ok());
  EXPECT_THAT(std::string(as_dart.status().message()), HasSubstr("is not a DART model's config"));
}

TEST_F(AutoencoderCheckpointTest, MissingFilesAreNamed) {
  EXPECT_THAT(Error(), HasSubstr(kConfigFile));
  std::filesystem::create_directories(dir_);
  ASSERT_TRUE(WriteFileAtomically((dir_ / kConfigFile).string(),
                                  AutoencoderConfigToJson(AutoencoderConfig::Tiny()))
                  .ok());
  EXPECT_THAT(Error(), HasSubstr(kWeightsFile));
}

TEST_F(AutoencoderCheckpointTest, HalfPrecisionWeightsLoadClose) {
  Autoencoder model = Calibrated();
  ASSERT_TRUE(SaveAutoencoder(dir_.string(), model, DType::kBF16).ok());
  absl::StatusOr<Autoencoder> loaded = LoadAutoencoder(dir_.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  torch::NoGradGuard no_grad;
  const torch::Tensor images = SmoothImages(2, 16, 42);
  const torch::Tensor a = model->Decode(model->Encode(images).mean);
  const torch::Tensor b = (*loaded)->Decode((*loaded)->Encode(images).mean);
  EXPECT_LE((a - b).abs().max().item<double>(), 0.1 * a.abs().max().item<double>());
}

}  // namespace
}  // namespace dartserve::model
