// The narrow, torch-free interface between the scheduler and a model (docs/design.md: layers, the
// Engine contract).
//
// The scheduler owns admission, batching and delivery; an Engine owns the maths. Engine
// implementations are driven by exactly one thread (the scheduler's worker), so they need no
// locking; the `const` queries (info, Validate, KvBytes, Steps, TokensPerStep) may be called from
// any thread.
#ifndef DARTSERVE_MODEL_ENGINE_H_
#define DARTSERVE_MODEL_ENGINE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/pixels.h"
#include "model/model_info.h"

namespace dartserve::model {

// One request's in-flight generation state (KV cache, RNG, step index).
class EngineRequest {
 public:
  virtual ~EngineRequest() = default;
  virtual int steps_done() const = 0;
  virtual int total_steps() const = 0;
  bool finished() const { return steps_done() == total_steps(); }
};

// One image for Engine::Render to make.
struct RenderJob {
  const EngineRequest* request = nullptr;
  int max_side = 0;  // box-downscale so the longer side is at most this many pixels (0: full size)
};

class Engine {
 public:
  virtual ~Engine() = default;

  // What the model is and accepts; fixed for the engine's lifetime.
  virtual const ModelInfo& info() const = 0;
  // INVALID_ARGUMENT naming the field when `params` cannot be served by this model: CheckParams
  // against info(), plus whatever only the model can check (a prompt's length in tokens).
  virtual absl::Status Validate(const GenerateParams& params) const = 0;
  // Exact peak KV memory of a request, held from Start() until the state is destroyed.
  virtual int64_t KvBytes(const GenerateParams& params) const = 0;
  // Model calls a request takes (ModelInfo::progress_steps): one Step() each.
  virtual int Steps(const GenerateParams& params) const = 0;
  // Tokens one step of this request puts through the model (rows x tokens per block).
  virtual int64_t TokensPerStep(const GenerateParams& params) const = 0;

  // Allocates the request's state (its whole KV memory) and draws its initial noise.
  virtual absl::StatusOr<std::unique_ptr<EngineRequest>> Start(const GenerateParams& params) = 0;
  // Advances every request by one step in one batched call. On error every request in the
  // batch must be considered failed.
  virtual absl::Status Step(std::span<EngineRequest* const> requests) = 0;
  // The jobs' images as 8-bit pixels, in job order, made in one batched call (a latent model
  // decodes all of them with one decoder call): each job's request's current x_0 estimate (its
  // final image once finished), made as `kind` says (model_info.h; final images are kDecoded).
  // FAILED_PRECONDITION when a request has not stepped yet; INTERNAL for a LibTorch failure.
  virtual absl::StatusOr<std::vector<Pixels>> Render(std::span<const RenderJob> jobs,
                                                     RenderKind kind) = 0;
};

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_ENGINE_H_
