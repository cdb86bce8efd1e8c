// Tiny DART models for tests: built in code, random weights from a fixed seed, CPU, fp32.
#ifndef DARTSERVE_TESTS_TESTING_TINY_MODEL_H_
#define DARTSERVE_TESTS_TESTING_TINY_MODEL_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/dart.h"
#include "model/text/tokenizer.h"

namespace dartserve::testing {

// Re-draws every parameter from N(0, stddev) with `seed`, including the AdaLN-Zero and output
// layers that start at zero: a freshly initialised DART is the zero function, which would make
// equality and causality tests pass vacuously.
void RandomizeParameters(torch::nn::Module& module, uint64_t seed, double stddev = 0.2);

// A second tiny geometry: 12x12 RGB, patch 3 (K = 16, token dim 27), T = 6, width 48, 3 heads.
model::ModelConfig TinyRgbConfig();

// ModelConfig::Tiny() with a small flow head (DART-FM; 3 Heun steps).
model::ModelConfig TinyFlowConfig();

// ModelConfig::Tiny() as DART-AR (token-level steps), with the mean head or `head`.
model::ModelConfig TinyArConfig(model::OutputHead head = model::OutputHead::kMean);

// ModelConfig::Tiny() with text conditioning and a tiny text encoder: vocab 320, at most 12 ids,
// width 32, depth 2, 2 heads. A model built from it needs a tokenizer (set_tokenizer) only for
// EncodePrompts; TextCondition takes token ids directly.
model::ModelConfig TinyTextConfig();
// `config` with text conditioning and TinyTextConfig()'s text encoder (any geometry and head).
model::ModelConfig WithTinyText(model::ModelConfig config);

// Captions in the style of the procedural shapes dataset (data/shapes.h), built here so the model
// layer's tests do not depend on train/. Every (size, colour, shape) appears, but only some
// positions with each.
std::vector<std::string> ShapeCaptions();

// A tokenizer trained on ShapeCaptions() (at most 320 pieces, so it fits TinyTextConfig()), built
// once per process in a temporary folder.
std::shared_ptr<const model::Tokenizer> TinyTokenizer();

// A tiny model (ModelConfig::Tiny() unless given) with randomised weights, in eval mode; text
// models get TinyTokenizer().
model::Dart MakeTinyModel(const model::ModelConfig& config = model::ModelConfig::Tiny(),
                          uint64_t seed = 1);

}  // namespace dartserve::testing

#endif  // DARTSERVE_TESTS_TESTING_TINY_MODEL_H_
