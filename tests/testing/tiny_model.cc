#include "tests/testing/tiny_model.h"

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

model::ModelConfig TinyTextConfig() {
  model::ModelConfig c = model::ModelConfig::Tiny();
  c.conditioning = model::Conditioning::kText;
  c.text_vocab_size = 64;
  c.text_max_tokens = 12;
  c.text_width = 32;
  c.text_depth = 2;
  c.text_heads = 2;
  return c;
}

model::Dart MakeTinyModel(const model::ModelConfig& config, uint64_t seed) {
  torch::set_num_threads(1);
  model::Dart model(config);
  RandomizeParameters(*model, seed);
  model->eval();
  return model;
}

}  // namespace dartserve::testing
