// Engines from checkpoint folders, for programs that serve models without touching LibTorch
// themselves (the server's main): a torch-free header over DartEngine and LoadCheckpoint.
#ifndef DARTSERVE_MODEL_ENGINE_FACTORY_H_
#define DARTSERVE_MODEL_ENGINE_FACTORY_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/compute_lane.h"
#include "model/engine.h"

namespace dartserve::model {

struct ReplicaOptions {
  // Torch devices ("cpu", "cuda:0", ...): one replica on each. Empty: `replicas` on the CPU.
  std::vector<std::string> devices;
  int replicas = 1;  // in [1, 64]; used when `devices` is empty
  // Guidance for requests that give none, in (0, limits.max_guidance]; conditional models only
  // (unconditional ones use 1). Unset: the checkpoint's own (DescribeCheckpoint).
  std::optional<float> default_guidance;
  // Where the replicas' torch work runs: empty, on the caller of each engine call; else one lane
  // per replica (replica i on lanes[i]), and the loading runs on lanes[0]. A server gives every
  // model the same lanes, so the process has one OpenMP pool per lane (model/compute_lane.h).
  std::vector<std::shared_ptr<ComputeLane>> lanes;
};

// Loads the checkpoint in `dir` (LoadCheckpoint, DescribeCheckpoint) and builds one DartEngine
// per replica. Replicas on the same device share the weights (inference only reads them); each
// has its own sampler state. Errors: the checkpoint's, INVALID_ARGUMENT for a bad device name,
// replica count, guidance or lane count, FAILED_PRECONDITION for a CUDA device without CUDA.
absl::StatusOr<std::vector<std::unique_ptr<Engine>>> LoadEngines(const std::string& dir,
                                                                 const ReplicaOptions& options);

// One lane per replica that `options` asks for (one per device, else `replicas`; none when the
// replicas are invalid, which LoadEngines reports), for ReplicaOptions::lanes.
std::vector<std::shared_ptr<ComputeLane>> MakeLanes(const ReplicaOptions& options);

// Torch intra-op threads. LibTorch applies the process-wide count to every thread when it first
// runs an operator, so each lane's thread gets `threads` of its own.
void SetTorchThreads(int threads);

}  // namespace dartserve::model

#endif  // DARTSERVE_MODEL_ENGINE_FACTORY_H_
