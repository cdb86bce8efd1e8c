#include "model/engine_factory.h"

#include <torch/torch.h>

#include <algorithm>
#include <exception>
#include <map>

#include "absl/strings/str_cat.h"
#include "model/checkpoint.h"
#include "model/dart_engine.h"

namespace dartserve::model {
namespace {

absl::StatusOr<std::vector<torch::Device>> ReplicaDevices(const ReplicaOptions& options) {
  std::vector<torch::Device> devices;
  for (const std::string& name : options.devices) {
    try {
      devices.emplace_back(name);
    } catch (const std::exception&) {
      return absl::InvalidArgumentError(
          absl::StrCat("devices: '", name.substr(0, 32), "' is not a torch device"));
    }
    if (devices.back().is_cuda() && !torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          absl::StrCat("devices: ", name.substr(0, 32), " asked for, but there is no CUDA here"));
    }
  }
  if (!devices.empty()) return devices;
  if (options.replicas < 1 || options.replicas > 64) {
    return absl::InvalidArgumentError("replicas: must be in [1, 64]");
  }
  return std::vector<torch::Device>(static_cast<size_t>(options.replicas), torch::kCPU);
}

absl::StatusOr<std::vector<std::unique_ptr<Engine>>> LoadEnginesHere(
    const std::string& dir, const ReplicaOptions& options,
    const std::vector<torch::Device>& devices) {
  absl::StatusOr<Dart> loaded = LoadCheckpoint(dir);
  if (!loaded.ok()) return loaded.status();
  absl::StatusOr<ModelInfo> info = DescribeCheckpoint(dir, *loaded);
  if (!info.ok()) return info.status();
  if (info->conditioning != Conditioning::kNone && options.default_guidance.has_value()) {
    if (absl::Status s = CheckDefaultGuidance(*options.default_guidance, info->limits); !s.ok()) {
      return s;
    }
    info->default_guidance = *options.default_guidance;
  }
  std::map<std::string, Dart> per_device;  // the weights each device's replicas share
  std::vector<std::unique_ptr<Engine>> engines;
  for (const torch::Device& device : devices) {
    auto [it, added] = per_device.try_emplace(device.str(), nullptr);
    if (added) {
      if (device.is_cpu()) {
        it->second = *loaded;
      } else {
        // A copy of its own: Module::to moves in place, which would move it for every device.
        absl::StatusOr<Dart> copy = LoadCheckpoint(dir);
        if (!copy.ok()) return copy.status();
        try {
          (*copy)->to(device);
        } catch (const std::exception& e) {
          return absl::InternalError(
              absl::StrCat("moving the model to ", device.str(), ": ", e.what()));
        }
        it->second = *copy;
      }
    }
    engines.push_back(std::make_unique<DartEngine>(it->second, *info));
  }
  return engines;
}

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<Engine>>> LoadEngines(const std::string& dir,
                                                                 const ReplicaOptions& options) {
  absl::StatusOr<std::vector<torch::Device>> devices = ReplicaDevices(options);
  if (!devices.ok()) return devices.status();
  if (options.lanes.empty()) return LoadEnginesHere(dir, options, *devices);
  if (options.lanes.size() != devices->size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("lanes: ", options.lanes.size(), " for ", devices->size(), " replicas"));
  }
  absl::StatusOr<std::vector<std::unique_ptr<Engine>>> engines;
  options.lanes[0]->Run([&] { engines = LoadEnginesHere(dir, options, *devices); });
  if (!engines.ok()) return engines;
  for (size_t i = 0; i < engines->size(); ++i) {
    (*engines)[i] = OnLane(std::move((*engines)[i]), options.lanes[i]);
  }
  return engines;
}

std::vector<std::shared_ptr<ComputeLane>> MakeLanes(const ReplicaOptions& options) {
  absl::StatusOr<std::vector<torch::Device>> devices = ReplicaDevices(options);
  std::vector<std::shared_ptr<ComputeLane>> lanes;
  for (size_t i = 0; devices.ok() && i < devices->size(); ++i) {
    lanes.push_back(std::make_shared<ComputeLane>(absl::StrCat("dartserve-lane", i)));
  }
  return lanes;
}

void SetTorchThreads(int threads) { torch::set_num_threads(std::max(1, threads)); }

}  // namespace dartserve::model
