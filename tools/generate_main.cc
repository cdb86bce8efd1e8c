// dartserve-generate: generate images from a checkpoint folder, without the service.
//
//   dartserve-generate --checkpoint weights/fmnist-dart --classes 0,1,2 --per_class 4 --out out/gen
//   dartserve-generate --checkpoint weights/shapes-dart --per_class 8 --prompts "circle|square"
//
// Writes one PNG per image (class_<c>_seed_<s>.png, or prompt_<i>_seed_<s>.png for text models), a
// grid of all of them (grid.png, one row per class or prompt) and, with --previews, every step's
// x_0 estimate (..._step_<n>.png) and progress.png: per image, a row of the previews a client sees
// at steps 1..T (the last is the final image); a latent model gets two rows, the linear latent
// previews over the decoded ones. All requests of a run are batched together through the same
// step API the server uses.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/file_io.h"
#include "model/checkpoint.h"
#include "model/image.h"
#include "model/sampler.h"

ABSL_FLAG(std::string, checkpoint, "weights/fmnist-dart-fm",
          "Checkpoint folder holding config.json and model.safetensors.");
ABSL_FLAG(std::string, classes, "all",
          "Comma-separated class ids, or 'all' (every class; for unconditional models: ignored).");
ABSL_FLAG(std::string, prompts, "",
          "Text models: prompts separated by '|' (empty: the unconditional empty prompt).");
ABSL_FLAG(int, per_class, 1, "Images per class or prompt (seeds seed, seed+1, ...).");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the first image of each class.");
ABSL_FLAG(double, guidance, 2.0,
          "Classifier-free guidance scale (1 = off; 2 is where the shipped model is measured).");
ABSL_FLAG(double, temperature, 1.0,
          "Scale of every sampled noise: re-noising, and a flow head's starting noise.");
ABSL_FLAG(std::string, out, "out/generate", "Output folder (created).");
ABSL_FLAG(bool, previews, false, "Also save every step's x_0 estimate.");
ABSL_FLAG(int, scale, 4, "Integer upscaling of the written PNGs (nearest neighbour).");
ABSL_FLAG(int, batch, 32, "Maximum requests stepped together.");
ABSL_FLAG(int, threads, 2, "Torch intra-op threads.");

namespace dm = dartserve::model;

namespace {

int Fail(const std::string& message) {
  std::cerr << "dartserve-generate: " << message << "\n";
  return 1;
}

absl::Status WritePng(const std::filesystem::path& path, const torch::Tensor& image, int scale) {
  absl::StatusOr<std::string> png = dm::ImageToPng(dm::UpscaleNearest(image, scale));
  if (!png.ok()) return png.status();
  return dartserve::WriteFileAtomically(path.string(), *png);
}

struct Job {
  std::optional<int> condition;
  std::string prompt;
  uint64_t seed = 0;
  std::unique_ptr<dm::GenerationState> state;
  std::string stem;
  std::vector<torch::Tensor> linear, decoded;  // --previews: per step
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Generate images from a DART checkpoint folder.");
  absl::ParseCommandLine(argc, argv);
  torch::set_num_threads(std::max(1, absl::GetFlag(FLAGS_threads)));
  const int scale = std::max(1, absl::GetFlag(FLAGS_scale));
  const int per_class = absl::GetFlag(FLAGS_per_class);
  if (per_class < 1 || per_class > 10000) return Fail("--per_class must be in [1, 10000]");

  absl::StatusOr<dm::Dart> model = dm::LoadCheckpoint(absl::GetFlag(FLAGS_checkpoint));
  if (!model.ok()) return Fail(std::string(model.status().message()));
  const dm::ModelConfig& config = (*model)->config();
  dm::Sampler sampler(*model);

  // Which conditions to generate: class ids, or prompts for text models.
  std::vector<std::optional<int>> conditions;
  std::vector<std::string> prompts;
  if (config.conditioning == dm::Conditioning::kText) {
    prompts = absl::StrSplit(absl::GetFlag(FLAGS_prompts), '|');
  } else if (!absl::GetFlag(FLAGS_prompts).empty()) {
    return Fail("--prompts: this model is not text-conditioned; use --classes");
  }
  if (config.conditioning != dm::Conditioning::kClass) {
    conditions.resize(std::max<size_t>(1, prompts.size()));
  } else if (absl::GetFlag(FLAGS_classes) == "all") {
    for (int c = 0; c < config.num_classes; ++c) conditions.push_back(c);
  } else {
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_classes), ',')) {
      int c = 0;
      if (!absl::SimpleAtoi(part, &c))
        return Fail(absl::StrCat("--classes: bad class id '", part, "'"));
      conditions.push_back(c);
    }
  }

  const std::filesystem::path out = absl::GetFlag(FLAGS_out);
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) return Fail(absl::StrCat("cannot create ", out.string(), ": ", ec.message()));

  std::vector<Job> jobs;
  for (size_t k = 0; k < conditions.size(); ++k) {
    const std::optional<int>& c = conditions[k];
    for (int i = 0; i < per_class; ++i) {
      Job job{.condition = c,
              .prompt = k < prompts.size() ? prompts[k] : std::string(),
              .seed = absl::GetFlag(FLAGS_seed) + i};
      job.stem = c                 ? absl::StrCat("class_", *c, "_seed_", job.seed)
                 : prompts.empty() ? absl::StrCat("seed_", job.seed)
                                   : absl::StrCat("prompt_", k, "_seed_", job.seed);
      jobs.push_back(std::move(job));
    }
  }

  const auto start = std::chrono::steady_clock::now();
  std::vector<torch::Tensor> images(jobs.size());
  const size_t batch = std::max(1, absl::GetFlag(FLAGS_batch));
  for (size_t first = 0; first < jobs.size(); first += batch) {
    const size_t last = std::min(jobs.size(), first + batch);
    std::vector<dm::GenerationState*> states;
    for (size_t i = first; i < last; ++i) {
      auto state =
          sampler.Start({.class_id = jobs[i].condition,
                         .prompt = jobs[i].prompt,
                         .seed = jobs[i].seed,
                         .guidance_scale = static_cast<float>(absl::GetFlag(FLAGS_guidance)),
                         .temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature))});
      if (!state.ok()) return Fail(std::string(state.status().message()));
      jobs[i].state = *std::move(state);
      states.push_back(jobs[i].state.get());
    }
    for (int step = 1; step <= config.num_steps; ++step) {
      if (absl::Status s = sampler.Step(states); !s.ok()) return Fail(std::string(s.message()));
      if (!absl::GetFlag(FLAGS_previews)) continue;
      const std::vector<const dm::GenerationState*> done(states.begin(), states.end());
      const torch::Tensor decoded = sampler.Images(done, dm::RenderKind::kDecoded);
      const torch::Tensor linear = sampler.Images(done, dm::RenderKind::kLinear);
      for (size_t i = first; i < last; ++i) {
        jobs[i].decoded.push_back(decoded[i - first]);
        jobs[i].linear.push_back(linear[i - first]);
        if (step == config.num_steps) continue;  // the final image is written below
        const auto path = out / absl::StrFormat("%s_step_%02d.png", jobs[i].stem, step);
        if (absl::Status s = WritePng(path, decoded[i - first], scale); !s.ok()) {
          return Fail(std::string(s.message()));
        }
      }
    }
    for (size_t i = first; i < last; ++i) {
      images[i] = sampler.Image(*jobs[i].state);
      jobs[i].state.reset();  // frees the KV caches
      const auto path = out / (jobs[i].stem + ".png");
      if (absl::Status s = WritePng(path, images[i], scale); !s.ok())
        return Fail(std::string(s.message()));
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  if (absl::Status s = WritePng(out / "grid.png", dm::MakeGrid(images, per_class, 1), scale);
      !s.ok()) {
    return Fail(std::string(s.message()));
  }
  if (absl::GetFlag(FLAGS_previews)) {
    std::vector<torch::Tensor> rows;
    for (const Job& job : jobs) {
      if (config.latent()) rows.insert(rows.end(), job.linear.begin(), job.linear.end());
      rows.insert(rows.end(), job.decoded.begin(), job.decoded.end());
    }
    if (absl::Status s =
            WritePng(out / "progress.png", dm::MakeGrid(rows, config.num_steps, 1), scale);
        !s.ok()) {
      return Fail(std::string(s.message()));
    }
  }
  std::cout << absl::StrFormat(
      "generated %d images (%d steps each) in %.2f s (%.2f images/s) -> %s\n", jobs.size(),
      config.num_steps, seconds, jobs.size() / seconds, (out / "grid.png").string());
  return 0;
}
