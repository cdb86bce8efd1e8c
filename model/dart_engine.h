// DartEngine: the Engine interface over a DART model and its Sampler.
#ifndef DARTSERVE_MODEL_DART_ENGINE_H_
#define DARTSERVE_MODEL_DART_ENGINE_H_

#include "model/dart.h"
#include "model/engine.h"
#include "model/sampler.h"

namespace dartserve::model {

// The sampler's parameters for an engine request (the same fields, one to one).
SampleParams ToSampleParams(const GenerateParams& params);

class DartEngine : public Engine {
 public:
  explicit DartEngine(Dart model, SamplerOptions options = {});

  absl::Status Validate(const GenerateParams& params) const override;
  int64_t KvBytes(const GenerateParams& params) const override;
  int Steps(const GenerateParams& params) const override;
  int64_t TokensPerStep(const GenerateParams& params) const override;
  absl::StatusOr<std::unique_ptr<EngineRequest>> Start(const GenerateParams& params) override;
  absl::Status Step(std::span<EngineRequest* const> requests) override;
  absl::StatusOr<Pixels> Render(const EngineRequest& request, int max_side) override;

 private:
  Sampler sampler_;
  SamplerOptions options_;
};

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_DART_ENGINE_H_
