#include "tests/testing/tiny_model.h"

namespace dartserve::testing {

void RandomizeParameters(torch::nn::Module& module, uint64_t seed, double stddev) {
  torch::NoGradGuard no_grad;
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (torch::Tensor& p : module.parameters()) {
    p.copy_(torch::randn(p.sizes(), gen, torch::kFloat) * stddev);
  }
}

model::Dart MakeTinyModel(const model::ModelConfig& config, uint64_t seed) {
  torch::set_num_threads(1);
  model::Dart model(config);
  RandomizeParameters(*model, seed);
  model->eval();
  return model;
}

}  // namespace dartserve::testing
