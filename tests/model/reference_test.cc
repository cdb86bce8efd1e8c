// Cross-check against the independent PyTorch reference (bench/reference/dart_reference.py): the
// same weights and the same seeds (so the same noise) give the same images within 1e-4.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/file_io.h"
#include "model/checkpoint.h"
#include "model/sampler.h"
#include "tests/testing/tiny_model.h"

namespace dartserve::model {
namespace {

TEST(ReferenceTest, PythonReferenceProducesTheSameImages) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "reference";
  std::filesystem::remove_all(dir);
  const ModelConfig config = dartserve::testing::TinyRgbConfig();
  Dart model = dartserve::testing::MakeTinyModel(config, /*seed=*/4);
  // Moderate weights keep activations O(1), so 1e-4 measures agreement rather than how far
  // float rounding is amplified by a chaotic random network.
  dartserve::testing::RandomizeParameters(*model, /*seed=*/4, /*stddev=*/0.08);
  ASSERT_TRUE(SaveCheckpoint(dir.string(), model).ok());

  struct Req {
    std::optional<int> cls;
    uint64_t seed;
    float guidance, temperature;
  };
  const std::vector<Req> reqs = {{3, 1, 1.0f, 1.0f},
                                 {7, 2, 2.5f, 1.0f},
                                 {std::nullopt, 3, 1.0f, 0.7f},
                                 {0, 123456789, 4.0f, 0.9f}};
  Sampler sampler(model);
  std::vector<torch::Tensor> images;
  std::ofstream json(dir / "requests.json");
  json << "[";
  for (size_t i = 0; i < reqs.size(); ++i) {
    const Req& r = reqs[i];
    auto image = sampler.Generate({.class_id = r.cls,
                                   .seed = r.seed,
                                   .guidance_scale = r.guidance,
                                   .temperature = r.temperature});
    ASSERT_TRUE(image.ok()) << image.status();
    images.push_back(*image);
    json << (i ? ", " : "") << "{\"class\": " << (r.cls ? std::to_string(*r.cls) : "null")
         << ", \"seed\": " << r.seed << ", \"guidance\": " << r.guidance
         << ", \"temperature\": " << r.temperature << "}";
  }
  json << "]\n";
  json.close();
  auto bytes = SerializeSafetensors({TensorToBytes("images", torch::stack(images), DType::kF32)});
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(WriteFileAtomically((dir / "expected.safetensors").string(), *bytes).ok());

  const std::string cmd = "/usr/bin/python3 " DARTSERVE_SOURCE_DIR
                          "/bench/reference/dart_reference.py --threads 1 --checkpoint " +
                          dir.string() + " --requests " + (dir / "requests.json").string() +
                          " --expect " + (dir / "expected.safetensors").string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

}  // namespace
}  // namespace dartserve::model
