#include "train/optimizer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <numbers>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_io.h"
#include "model/checkpoint.h"
#include "nlohmann/json.hpp"

namespace dartserve::train {
namespace {

namespace fs = std::filesystem;
namespace dm = dartserve::model;

// Replaces `state` with `tmp`, keeping `old` while they swap so that a crash leaves one of them.
absl::Status SwapIn(const fs::path& tmp, const fs::path& state, const fs::path& old) {
  std::error_code ec;
  fs::remove_all(old, ec);
  if (fs::exists(state)) fs::rename(state, old, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot move ", state.string(), ": ", ec.message()));
  }
  fs::rename(tmp, state, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot move ", tmp.string(), ": ", ec.message()));
  }
  fs::remove_all(old, ec);
  return absl::OkStatus();
}

absl::Status LoadModuleFile(torch::nn::Module& module, const fs::path& path) {
  absl::StatusOr<dm::SafetensorsFile> file = dm::SafetensorsFile::Read(path.string());
  if (!file.ok()) return file.status();
  return dm::LoadWeights(module, *file);
}

}  // namespace

AdamWEma::AdamWEma(torch::nn::Module& model, torch::nn::Module& ema, const TrainConfig& config)
    : config_(config),
      model_(model),
      ema_(ema),
      params_(model.parameters()),
      ema_params_(ema.parameters()) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    ema_params_[i].copy_(params_[i]);
    ema_params_[i].set_requires_grad(false);
    adam_m_.push_back(torch::zeros_like(params_[i]));
    adam_v_.push_back(torch::zeros_like(params_[i]));
  }
}

double AdamWEma::LearningRate(int64_t step) const {
  if (step < config_.warmup_steps) return config_.lr * (step + 1) / config_.warmup_steps;
  const double span = std::max<int64_t>(1, config_.total_steps - config_.warmup_steps);
  const double progress = std::min(1.0, (step - config_.warmup_steps) / span);
  return config_.min_lr +
         0.5 * (config_.lr - config_.min_lr) * (1 + std::cos(std::numbers::pi * progress));
}

void AdamWEma::Update(int64_t step) {
  if (config_.grad_clip > 0) torch::nn::utils::clip_grad_norm_(params_, config_.grad_clip);
  const double lr = LearningRate(step);
  const int64_t t = step + 1;
  const double bc1 = 1 - std::pow(config_.beta1, t), bc2 = 1 - std::pow(config_.beta2, t);
  const double decay = std::min(config_.ema_decay, (1.0 + step) / (10.0 + step));
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i];
    const torch::Tensor g = p.grad();
    if (!g.defined()) continue;
    adam_m_[i].mul_(config_.beta1).add_(g, 1 - config_.beta1);
    adam_v_[i].mul_(config_.beta2).addcmul_(g, g, 1 - config_.beta2);
    if (config_.weight_decay > 0 && p.dim() >= 2) p.mul_(1 - lr * config_.weight_decay);
    const torch::Tensor denom = (adam_v_[i] / bc2).sqrt_().add_(config_.adam_eps);
    p.addcdiv_(adam_m_[i], denom, -lr / bc1);
    ema_params_[i].mul_(decay).add_(p, 1 - decay);
  }
}

absl::Status AdamWEma::Save(const std::string& out_dir, int64_t step,
                            const std::string& config_json) const {
  const fs::path tmp = fs::path(out_dir) / "state.tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", tmp.string()));
  std::vector<dm::TensorToWrite> optimizer;
  const auto named = model_.named_parameters();
  for (size_t i = 0; i < named.size(); ++i) {
    optimizer.push_back(dm::TensorToBytes("m/" + named[i].key(), adam_m_[i], dm::DType::kF32));
    optimizer.push_back(dm::TensorToBytes("v/" + named[i].key(), adam_v_[i], dm::DType::kF32));
  }
  const std::pair<const char*, std::vector<dm::TensorToWrite>> files[] = {
      {"model.safetensors", dm::WeightsToWrite(model_, dm::DType::kF32)},
      {"ema.safetensors", dm::WeightsToWrite(ema_, dm::DType::kF32)},
      {"optimizer.safetensors", std::move(optimizer)},
  };
  for (const auto& [name, tensors] : files) {
    absl::StatusOr<std::string> bytes = dm::SerializeSafetensors(tensors);
    if (!bytes.ok()) return bytes.status();
    if (absl::Status s = WriteFileAtomically((tmp / name).string(), *bytes); !s.ok()) return s;
  }
  const std::string meta = nlohmann::json({{"step", step}}).dump() + "\n";
  for (const auto& [name, text] :
       {std::pair<const char*, const std::string&>{dm::kConfigFile, config_json},
        {"state.json", meta}}) {
    if (absl::Status s = WriteFileAtomically((tmp / name).string(), text); !s.ok()) return s;
  }
  return SwapIn(tmp, fs::path(out_dir) / "state", fs::path(out_dir) / "state.old");
}

absl::StatusOr<int64_t> AdamWEma::Load(const std::string& out_dir,
                                       const std::function<bool(const std::string&)>& same_model) {
  fs::path dir = fs::path(out_dir) / "state";
  if (!fs::exists(dir / "state.json")) dir = fs::path(out_dir) / "state.old";
  if (!fs::exists(dir / "state.json")) return 0;  // fresh run
  const auto fail = [&](absl::string_view what) {
    return absl::FailedPreconditionError(absl::StrCat("resuming from ", dir.string(), ": ", what));
  };
  absl::StatusOr<std::string> config_text = ReadFile((dir / dm::kConfigFile).string());
  if (!config_text.ok()) return fail(config_text.status().message());
  if (!same_model(*config_text)) {
    return fail("its model config differs from --config's (use a new output folder)");
  }
  for (const auto& [name, module] :
       {std::pair<const char*, torch::nn::Module*>{"model.safetensors", &model_},
        {"ema.safetensors", &ema_}}) {
    if (absl::Status s = LoadModuleFile(*module, dir / name); !s.ok()) return fail(s.message());
  }
  absl::StatusOr<dm::SafetensorsFile> opt =
      dm::SafetensorsFile::Read((dir / "optimizer.safetensors").string());
  if (!opt.ok()) return fail(opt.status().message());
  torch::NoGradGuard no_grad;
  const auto named = model_.named_parameters();
  for (size_t i = 0; i < named.size(); ++i) {
    for (auto& [prefix, target] :
         {std::pair<std::string, torch::Tensor*>{"m/", &adam_m_[i]}, {"v/", &adam_v_[i]}}) {
      auto it = opt->tensors().find(prefix + named[i].key());
      if (it == opt->tensors().end() || at::IntArrayRef(it->second.shape) != target->sizes()) {
        return fail(
            absl::StrCat("optimizer state for ", named[i].key(), " is missing or misshapen"));
      }
      target->copy_(dm::TensorFromBytes(it->second, opt->Data(it->second)));
    }
  }
  absl::StatusOr<std::string> meta = ReadFile((dir / "state.json").string());
  if (!meta.ok()) return fail(meta.status().message());
  const nlohmann::json j = nlohmann::json::parse(*meta, nullptr, false);
  if (j.is_discarded() || !j.contains("step") || !j["step"].is_number_integer()) {
    return fail("state.json has no step");
  }
  return j["step"].get<int64_t>();
}

absl::Status CopyWeights(torch::nn::Module& from, torch::nn::Module& to, const std::string& what,
                         bool grow) {
  torch::NoGradGuard no_grad;
  const auto copy = [&what, grow](const torch::OrderedDict<std::string, torch::Tensor>& src,
                                  torch::OrderedDict<std::string, torch::Tensor> dst) {
    if (grow ? src.size() > dst.size() : src.size() != dst.size()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": another architecture (", src.size(),
                                                     " tensors, the model has ", dst.size(), ")"));
    }
    for (const auto& item : src) {
      torch::Tensor* d = dst.find(item.key());
      if (d == nullptr || !d->sizes().equals(item.value().sizes())) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": another architecture (", item.key(), " differs)"));
      }
      d->copy_(item.value());
    }
    return absl::OkStatus();
  };
  if (absl::Status s = copy(from.named_parameters(), to.named_parameters()); !s.ok()) return s;
  return copy(from.named_buffers(), to.named_buffers());
}

absl::Status RunTraining(TrainingRun& run, const TrainConfig& config, const std::atomic<bool>& stop,
                         int64_t max_steps) {
  const int64_t end =
      max_steps < 0 ? config.total_steps : std::min(config.total_steps, run.step() + max_steps);
  auto last_time = std::chrono::steady_clock::now();
  int64_t last_step = run.step();
  double loss_sum = 0;
  while (run.step() < end && !stop.load()) {
    loss_sum += run.TrainStep();
    const int64_t step = run.step();
    if (step % config.log_every == 0 || step == end) {
      const auto now = std::chrono::steady_clock::now();
      const double secs = std::chrono::duration<double>(now - last_time).count();
      const int64_t done = std::max<int64_t>(step - last_step, 1);
      const double ips = done * config.batch_size / std::max(secs, 1e-9);
      const double eta = (config.total_steps - step) * secs / done;
      std::cout << absl::StrFormat("step %d/%d  loss %.5f  lr %.2e  %.1f img/s  eta %dh%02dm\n",
                                   step, config.total_steps, loss_sum / done,
                                   run.LearningRate(step - 1), ips, static_cast<int>(eta / 3600),
                                   static_cast<int>(eta / 60) % 60)
                << std::flush;
      last_time = now;
      last_step = step;
      loss_sum = 0;
    }
    if (step % config.checkpoint_every == 0) {
      if (absl::Status s = run.SaveCheckpoint(); !s.ok()) return s;
    }
    if (config.sample_every > 0 && step % config.sample_every == 0) {
      if (absl::Status s = run.WriteSampleGrid(); !s.ok()) return s;
    }
  }
  return run.SaveCheckpoint();
}

}  // namespace dartserve::train
