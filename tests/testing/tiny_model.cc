#include "tests/testing/tiny_model.h"

#include <unistd.h>

#include <filesystem>
#include <stdexcept>

namespace dartserve::testing {

void RandomizeParameters(torch::nn::Module& module, uint64_t seed, double stddev) {
  torch::NoGradGuard no_grad;
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (torch::Tensor& p : module.parameters()) {
    p.copy_(torch::randn(p.sizes(), gen, torch::kFloat) * stddev);
  }
}

model::ModelConfig TinyRgbConfig() {
  model::ModelConfig c = model::ModelConfig::Tiny();
  c.image_size = 12;
  c.channels = 3;
  c.patch_size = 3;
  c.num_steps = 6;
  c.width = 48;
  c.heads = 3;
  return c;
}

model::ModelConfig TinyFlowConfig() {
  model::ModelConfig c = model::ModelConfig::Tiny();
  c.head = model::OutputHead::kFlow;
  c.flow_width = 16;
  c.flow_depth = 2;
  c.flow_steps = 3;
  c.flow_solver = model::FlowSolver::kHeun;
  return c;
}

model::ModelConfig TinyArConfig(model::OutputHead head) {
  model::ModelConfig c =
      head == model::OutputHead::kFlow ? TinyFlowConfig() : model::ModelConfig::Tiny();
  c.variant = model::Variant::kDartAr;
  return c;
}

model::ModelConfig TinyTextConfig() { return WithTinyText(model::ModelConfig::Tiny()); }

model::ModelConfig WithTinyText(model::ModelConfig c) {
  c.conditioning = model::Conditioning::kText;
  c.text_vocab_size = 320;
  c.text_max_tokens = 12;
  c.text_width = 32;
  c.text_depth = 2;
  c.text_heads = 2;
  return c;
}

std::vector<std::string> ShapeCaptions() {
  const std::vector<std::string> sizes = {"small", "medium", "large"};
  const std::vector<std::string> colours = {"red",    "green",  "blue", "yellow",
                                            "purple", "orange", "cyan", "brown"};
  const std::vector<std::string> shapes = {"circle", "square", "triangle", "cross", "ring"};
  const std::vector<std::string> places = {"at the top left", "in the center", "at the bottom",
                                           "on the right"};
  const std::vector<std::string> backgrounds = {"white", "black", "gray"};
  std::vector<std::string> out;
  int k = 0;
  for (const auto& s : sizes) {
    for (const auto& c : colours) {
      for (const auto& h : shapes) {
        const std::string& p = places[k % places.size()];
        const std::string& b = backgrounds[k % backgrounds.size()];
        out.push_back("a " + s + " " + c + " " + h + " " + p + " on a " + b + " background");
        out.push_back(c + " " + h + ", " + p.substr(p.find(' ', 3) + 1));
        ++k;
      }
    }
  }
  return out;
}

std::shared_ptr<const model::Tokenizer> TinyTokenizer() {
  static const auto* const tokenizer = [] {
    namespace fs = std::filesystem;
    const fs::path path =
        fs::temp_directory_path() / ("tiny_tokenizer_" + std::to_string(::getpid()) + ".model");
    const absl::Status trained =
        model::TrainTokenizer(ShapeCaptions(), TinyTextConfig().text_vocab_size, path.string());
    if (!trained.ok()) throw std::runtime_error(std::string(trained.message()));
    absl::StatusOr<model::Tokenizer> loaded = model::Tokenizer::Load(path.string());
    if (!loaded.ok()) throw std::runtime_error(std::string(loaded.status().message()));
    fs::remove(path);
    return new std::shared_ptr<const model::Tokenizer>(
        std::make_shared<const model::Tokenizer>(*std::move(loaded)));
  }();
  return *tokenizer;
}

model::Dart MakeTinyModel(const model::ModelConfig& config, uint64_t seed) {
  torch::set_num_threads(1);
  model::Dart model(config);
  RandomizeParameters(*model, seed);
  if (config.conditioning == model::Conditioning::kText) model->set_tokenizer(TinyTokenizer());
  model->eval();
  return model;
}

}  // namespace dartserve::testing
