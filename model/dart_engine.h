// DartEngine: the Engine interface over a DART model and its Sampler. Thread-compatible, as the
// Engine contract asks (model/engine.h).
#ifndef DARTSERVE_MODEL_DART_ENGINE_H_
#define DARTSERVE_MODEL_DART_ENGINE_H_

#include "model/dart.h"
#include "model/engine.h"
#include "model/sampler.h"

namespace dartserve::model {

class DartEngine : public Engine {
 public:
  // `info` describes `model` (DescribeModel or DescribeCheckpoint), with whatever the caller
  // decides on top (class names, the default guidance).
  DartEngine(Dart model, ModelInfo info, SamplerOptions options = {});
  // Described by DescribeModel(model).
  explicit DartEngine(Dart model, SamplerOptions options = {});

  const ModelInfo& info() const override { return info_; }
  absl::Status Validate(const GenerateParams& params) const override;
  int64_t KvBytes(const GenerateParams& params) const override;
  int Steps(const GenerateParams& params) const override;
  int64_t TokensPerStep(const GenerateParams& params) const override;
  absl::StatusOr<std::unique_ptr<EngineRequest>> Start(const GenerateParams& params) override;
  absl::Status Step(std::span<EngineRequest* const> requests) override;
  absl::StatusOr<std::vector<Pixels>> Render(std::span<const RenderJob> jobs,
                                             RenderKind kind) override;

 private:
  Sampler sampler_;
  SamplerOptions options_;
  ModelInfo info_;
};

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_DART_ENGINE_H_
