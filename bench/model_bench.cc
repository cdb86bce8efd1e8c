// dartserve-model-bench: the cost of generating one image with the KV cache, against one
// teacher-forced forward over the whole sequence and against recomputing the prefix every step.
//
//   dartserve-model-bench [--checkpoint DIR | --config FILE] [--reps 5] [--threads 2] [--json F]
//                         [--flow_steps N] [--batch 32] [--guidance 2]
//
// With the KV cache, T steps of K tokens cost about one full-sequence forward (the linear layers
// see T*K tokens in total); recomputing the prefix costs sum_b (b+1) K tokens, about (T+1)/2 times
// more. DART-AR makes T*K calls of one token each instead of T calls of K. Weights are random
// unless a checkpoint is given (speed does not depend on them).
//
// Then, through the engine at --batch requests stepped together: the mean step, and rendering
// every request's image in one Engine::Render call, as linear previews and decoded (for a latent
// model the decoder; docs/performance.md compares them with a step and with an image's compute).
#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "common/file_io.h"
#include "common/malloc_policy.h"
#include "model/checkpoint.h"
#include "model/dart_engine.h"
#include "model/sampler.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, checkpoint, "", "Checkpoint folder to benchmark (its config and weights).");
ABSL_FLAG(std::string, config, "",
          "Model config JSON (or a training config: its \"model\" part) to benchmark with random "
          "weights.");
ABSL_FLAG(int, reps, 5, "Timed repetitions per measurement (after one warm-up).");
ABSL_FLAG(int, threads, 2, "Torch intra-op threads.");
ABSL_FLAG(std::string, json, "", "Also write the results as JSON to this file.");
ABSL_FLAG(int, flow_steps, 0, "Flow-head models: ODE steps per DART step (0: the config's).");
ABSL_FLAG(int, batch, 32, "Requests stepped and rendered together in the engine measurement.");
ABSL_FLAG(double, guidance, 2.0, "Guidance scale in the engine measurement.");

namespace dm = dartserve::model;

namespace {

struct Stats {
  double min, median, max;
};

Stats Time(int reps, const std::function<void()>& fn) {
  fn();  // warm-up: allocator, OpenMP pool, first-touch
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms.front(), ms[ms.size() / 2], ms.back()};
}

nlohmann::json ToJson(const Stats& s) {
  return {{"min_ms", s.min}, {"median_ms", s.median}, {"max_ms", s.max}};
}

// The engine at `batch` requests: the mean step of a whole trajectory, and one Render of every
// request's final image per kind.
struct EngineCosts {
  Stats step, linear, decoded;
};

EngineCosts TimeEngine(dm::Dart model, int batch, float guidance, int flow_steps, int reps) {
  dm::DartEngine engine(model, {.flow_steps = flow_steps});
  const dm::ModelInfo& info = engine.info();
  std::vector<std::unique_ptr<dm::EngineRequest>> owned;
  std::vector<dm::EngineRequest*> states;
  std::vector<dm::RenderJob> jobs;
  uint64_t seed = 0;
  const auto run_to_end = [&] {
    owned.clear();
    states.clear();
    jobs.clear();
    for (int i = 0; i < batch; ++i) {
      dm::GenerateParams p{.seed = seed++, .guidance_scale = guidance};
      if (info.conditioning == dm::Conditioning::kClass) p.class_id = i % info.num_classes;
      if (info.conditioning == dm::Conditioning::kText) {
        p.prompt = "a small red circle to the left of a large blue square on a white background";
      }
      auto r = engine.Start(p);
      if (!r.ok()) throw std::runtime_error(std::string(r.status().message()));
      states.push_back(r->get());
      jobs.push_back({.request = r->get()});
      owned.push_back(*std::move(r));
    }
    while (!states.front()->finished()) {
      if (!engine.Step(states).ok()) throw std::runtime_error("step failed");
    }
  };
  const int steps = engine.Steps({.guidance_scale = guidance});
  const Stats trajectory = Time(reps, run_to_end);
  const Stats step{trajectory.min / steps, trajectory.median / steps, trajectory.max / steps};
  const auto render = [&engine, &jobs](dm::RenderKind kind) {
    return [&engine, &jobs, kind] {
      if (!engine.Render(jobs, kind).ok()) throw std::runtime_error("render failed");
    };
  };
  return {step, Time(reps, render(dm::RenderKind::kLinear)),
          Time(reps, render(dm::RenderKind::kDecoded))};
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = dartserve::TuneMallocForTensors(); !s.ok()) {
    std::cerr << "dartserve-model-bench: " << s.message() << "\n";
    return 1;
  }
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  const int reps = std::max(1, absl::GetFlag(FLAGS_reps));

  dm::Dart model{nullptr};
  if (!absl::GetFlag(FLAGS_checkpoint).empty()) {
    auto loaded = dm::LoadCheckpoint(absl::GetFlag(FLAGS_checkpoint));
    if (!loaded.ok()) {
      std::cerr << "dartserve-model-bench: " << loaded.status().message() << "\n";
      return 1;
    }
    model = *loaded;
  } else {
    dm::ModelConfig config;
    if (!absl::GetFlag(FLAGS_config).empty()) {
      auto text = dartserve::ReadFile(absl::GetFlag(FLAGS_config));
      if (text.ok()) {
        const nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
        if (j.is_object() && j.contains("model")) text = j["model"].dump();
      }
      auto parsed = text.ok() ? dm::ModelConfigFromJson(*text)
                              : absl::StatusOr<dm::ModelConfig>(text.status());
      if (!parsed.ok()) {
        std::cerr << "dartserve-model-bench: " << parsed.status().message() << "\n";
        return 1;
      }
      config = *parsed;
    }
    model = dm::Dart(config);
  }
  model->eval();
  const dm::ModelConfig& c = model->config();
  torch::NoGradGuard no_grad;

  const torch::Tensor x = torch::randn({1, c.sequence_length(), c.token_dim()});
  dm::Condition cond;
  if (c.conditioning == dm::Conditioning::kText) {
    const std::string prompt = "a small red circle at the top left on a white background";
    absl::StatusOr<dm::TextBatch> ids = model->EncodePrompts({&prompt, 1});
    if (!ids.ok()) {
      std::cerr << "dartserve-model-bench: " << ids.status().message() << "\n";
      return 1;
    }
    cond = model->TextCondition(*ids);
  } else {
    cond = model->ClassCondition(torch::zeros({1}, torch::kLong));
  }
  const Stats full = Time(reps, [&] { model->forward(x, cond); });

  uint64_t seed = 0;
  const auto generate = [&](dm::Sampler& sampler) {
    return [&sampler, &seed] {
      auto image = sampler.Generate({.seed = seed++});
      if (!image.ok()) throw std::runtime_error(std::string(image.status().message()));
    };
  };
  const int flow_steps = absl::GetFlag(FLAGS_flow_steps);
  dm::Sampler cached(model, {.flow_steps = flow_steps});
  dm::Sampler recompute(model, {.kv_cache = false, .flow_steps = flow_steps});
  const Stats kv = Time(reps, generate(cached));
  const Stats re = Time(reps, generate(recompute));

  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  std::cout << absl::StrFormat(
      "config: %dx%dx%d patch %d (K=%d), T=%d, %s, %s head%s, width %d, depth %d, %.2fM params, "
      "%d threads\n",
      c.image_size, c.image_size, c.channels, c.patch_size, c.tokens_per_block(), c.num_steps,
      c.autoregressive() ? "dart_ar" : "dart", c.flow() ? "flow" : "mean",
      c.flow() ? absl::StrFormat(" (%d ODE steps)", flow_steps > 0 ? flow_steps : c.flow_steps)
               : "",
      c.width, c.depth, params / 1e6, torch::get_num_threads());
  std::cout << absl::StrFormat("%-34s %9s %9s %9s %8s\n", "measurement", "min ms", "median", "max",
                               "x full");
  const auto row = [&](const char* name, const Stats& s) {
    std::cout << absl::StrFormat("%-34s %9.2f %9.2f %9.2f %8.2f\n", name, s.min, s.median, s.max,
                                 s.median / full.median);
  };
  row("full-sequence forward", full);
  row("generate 1 image, KV cache", kv);
  row("generate 1 image, recompute prefix", re);
  // Recompute feeds sum over steps of the prefix length: (T+1)/2 sequences for dart, about L/2
  // for dart_ar's L = (T+1)K - 1 token steps. The KV cache feeds each token once, but dart_ar pays
  // per-call overhead L times.
  const double recompute_theory =
      c.autoregressive() ? (c.generation_steps() + 1) / 2.0 : (c.num_steps + 1) / 2.0;
  std::cout << absl::StrFormat("theory (FLOPs): KV cache ~1.0x, recompute ~%.1fx; %d model calls\n",
                               recompute_theory, c.generation_steps());

  const int batch = std::max(1, absl::GetFlag(FLAGS_batch));
  const float guidance = static_cast<float>(absl::GetFlag(FLAGS_guidance));
  const EngineCosts engine = TimeEngine(model, batch, guidance, flow_steps, reps);
  // The batch's whole trajectory; its final decode is measured on top of it.
  const double trajectory_ms = engine.step.median * c.generation_steps();
  const double decode_share = engine.decoded.median / (trajectory_ms + engine.decoded.median);
  std::cout << absl::StrFormat("engine at batch %d, guidance %.1f (%s model, %dx%d images):\n",
                               batch, guidance, c.latent() ? "latent" : "pixel", c.pixel_size(),
                               c.pixel_size());
  std::cout << absl::StrFormat("%-34s %9s %9s %9s %8s\n", "measurement", "min ms", "median", "max",
                               "x step");
  const auto engine_row = [&](const char* name, const Stats& s) {
    std::cout << absl::StrFormat("%-34s %9.2f %9.2f %9.2f %8.3f\n", name, s.min, s.median, s.max,
                                 s.median / engine.step.median);
  };
  engine_row("one step of the batch", engine.step);
  engine_row("render batch: linear previews", engine.linear);
  engine_row("render batch: decoded", engine.decoded);
  std::cout << absl::StrFormat(
      "final decode: %.1f %% of an image's compute; a linear preview: %.2f %% of a step\n",
      100 * decode_share, 100 * engine.linear.median / engine.step.median);

  if (!absl::GetFlag(FLAGS_json).empty()) {
    nlohmann::json j = {
        {"config", nlohmann::json::parse(dm::ModelConfigToJson(c))},
        {"params", params},
        {"threads", torch::get_num_threads()},
        {"flow_steps", flow_steps > 0 ? flow_steps : c.flow_steps},
        {"model_calls_per_image", c.generation_steps()},
        {"full_forward", ToJson(full)},
        {"generate_kv_cache", ToJson(kv)},
        {"generate_recompute", ToJson(re)},
        {"kv_over_full", kv.median / full.median},
        {"recompute_over_full", re.median / full.median},
        {"engine",
         {{"batch", batch},
          {"guidance", guidance},
          {"step", ToJson(engine.step)},
          {"render_linear", ToJson(engine.linear)},
          {"render_decoded", ToJson(engine.decoded)},
          {"decode_share_of_image", decode_share},
          {"linear_preview_over_step", engine.linear.median / engine.step.median}}}};
    std::ofstream(absl::GetFlag(FLAGS_json)) << j.dump(2) << "\n";
  }
  return 0;
}
