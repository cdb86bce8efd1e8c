// Dispatcher: routes requests to the least-loaded scheduler serving the requested model.
//
// Each Scheduler drives one Engine (one model replica on one device) with its own worker thread,
// so every batch holds one model and one image geometry. Mixing image sizes inside one batch would
// need: per-row token counts (ragged blocks) in the step, varlen attention over caches of
// different widths, RoPE tables per geometry, and a token cap that counts real tokens; DART's
// linear layers would batch fine over the concatenated tokens. Until a workload needs it, sizes
// are separate models and the dispatcher keeps them apart.
// Thread-safety: AddReplica before serving; Submit and Cancel are thread-safe afterwards.
#ifndef DARTSERVE_SCHEDULER_DISPATCHER_H_
#define DARTSERVE_SCHEDULER_DISPATCHER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "scheduler/scheduler.h"

namespace dartserve::scheduler {

class Dispatcher {
 public:
  // Registers `scheduler` (not owned; must outlive the dispatcher) as a replica of `model`.
  void AddReplica(const std::string& model, Scheduler* scheduler);

  // Submits to the least-loaded replica of `model`; when it is full, tries the others in order of
  // load. NOT_FOUND for an unknown model; otherwise as Scheduler::Submit (ownership iff OK).
  absl::Status Submit(const std::string& model, std::unique_ptr<Request>& request);
  // Cancels `id` on whichever replica holds it.
  bool Cancel(const std::string& id);
  // Stops admission on every replica.
  void BeginDrain(absl::Duration grace);

  std::vector<std::string> models() const;
  const std::vector<Scheduler*>& replicas(const std::string& model) const;

 private:
  std::map<std::string, std::vector<Scheduler*>> replicas_;
};

}  // namespace dartserve::scheduler

#endif  // DARTSERVE_SCHEDULER_DISPATCHER_H_
