// dartserve-bench: the scheduler driven in-process with a real model, against the ways image
// servers usually run: one request at a time, and static batches that start and finish together.
//
//   dartserve-bench --checkpoint weights/fmnist-dart --json out/bench.json
//   dartserve-bench --checkpoint weights/shapes-dart --guidance 3 --json out/bench-text.json
//
// Runs, in one process and one sitting so the numbers are comparable:
//   sequential   one request at a time (scheduler with max_batch_requests = 1)
//   static       batches of --batch requests that start and finish together
//   continuous   the scheduler at saturation (closed loop, --concurrency requests in flight)
//   recompute    continuous batching without the KV cache (prefix recomputed every step)
//   poisson@r    open-loop Poisson arrivals at rate r (fractions of the continuous saturation rate)
// and reports images/s, latency p50/p95/p99, time to first preview, mean batch size, achieved
// FLOP/s and its ratio to the matrix-multiply peak measured at the start of the run. Request i
// asks for class i % 10, or for a text model prompt i % n of --prompts. With --peer, the plain
// PyTorch peer (bench/reference/dart_reference.py) then runs on the same checkpoint and load, and
// the ratios against it are printed: every claim against the peer is one command, one sitting.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <span>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/malloc_policy.h"
#include "model/checkpoint.h"
#include "model/compute_lane.h"
#include "model/dart_engine.h"
#include "model/engine_factory.h"
#include "nlohmann/json.hpp"
#include "scheduler/dispatcher.h"
#include "scheduler/scheduler.h"

ABSL_FLAG(std::string, checkpoint, "weights/fmnist-dart", "Checkpoint folder.");
ABSL_FLAG(int, images, 128, "Requests per closed-loop run.");
ABSL_FLAG(int, batch, 32, "Static batch size.");
ABSL_FLAG(int, sequential_images, 0,
          "Requests of the one-at-a-time run (and of the peer's); 0: max(8, --images / 8).");
ABSL_FLAG(int, concurrency, 32, "Requests in flight for the continuous closed loop.");
ABSL_FLAG(std::string, loads, "0.5,0.7,0.9",
          "Poisson rates as fractions of continuous saturation.");
ABSL_FLAG(double, poisson_seconds, 20, "Duration of each Poisson run.");
ABSL_FLAG(double, guidance, 1.0, "Guidance scale of every request.");
ABSL_FLAG(int, preview_every, 1, "Preview cadence (steps) requested by every request.");
ABSL_FLAG(bool, decoded_previews, false,
          "Latent models: previews by the full decoder instead of the linear latent map.");
ABSL_FLAG(int, threads, 2, "Torch intra-op threads (of each replica's lane).");
ABSL_FLAG(int, replicas, 1,
          "Replicas for the continuous and Poisson runs, each on its own compute lane with "
          "--threads threads, behind one dispatcher as in the server (dartserve --replicas); the "
          "other runs use the first.");
ABSL_FLAG(std::string, json, "", "Write the results as JSON here.");
ABSL_FLAG(std::string, prompts,
          "a small red circle at the top left on a white background|blue square, bottom right|"
          "a large green triangle in the center on a black background|yellow ring, top right, "
          "grey background",
          "Text models: the prompts requests cycle through, separated by |.");
ABSL_FLAG(bool, peer, false,
          "After its own runs, run the plain PyTorch peer (--peer_command) on the same checkpoint, "
          "guidance, threads and image counts, one image at a time and in static batches of "
          "--batch, and print the ratios (class-conditioned pixel models only).");
ABSL_FLAG(std::string, peer_command, "/usr/bin/python3 bench/reference/dart_reference.py",
          "How to start the peer, from the working directory.");
ABSL_FLAG(bool, tune_malloc, true,
          "TuneMallocForTensors() as every dartserve binary does; false: glibc's defaults, to "
          "measure the difference (docs/performance.md, \"Allocator\").");
ABSL_FLAG(std::string, runs, "sequential,static,continuous,recompute,poisson",
          "Which runs to do (profiling one of them); poisson needs continuous.");

namespace dm = dartserve::model;
namespace ds = dartserve::scheduler;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// FLOP/s of a large fp32 matrix multiply on this machine, now.
double MeasureMatmulPeak() {
  torch::NoGradGuard no_grad;
  const torch::Tensor a = torch::randn({1024, 1024}), b = torch::randn({1024, 1024});
  torch::mm(a, b);
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    torch::mm(a, b);
    best = std::max(best, 2.0 * 1024 * 1024 * 1024 / Seconds(Clock::now() - t0));
  }
  return best;
}

// Request i's parameters: class i % 10, or prompt i % n for a text model; seed i.
class RequestMaker {
 public:
  explicit RequestMaker(const dm::ModelConfig& config)
      : prompts_(config.conditioning == dm::Conditioning::kText
                     ? absl::StrSplit(absl::GetFlag(FLAGS_prompts), '|', absl::SkipEmpty())
                     : std::vector<std::string>()),
        guidance_(static_cast<float>(absl::GetFlag(FLAGS_guidance))) {}

  dm::GenerateParams operator()(int index) const {
    dm::GenerateParams params{.seed = static_cast<uint64_t>(index), .guidance_scale = guidance_};
    if (prompts_.empty()) {
      params.class_id = index % 10;
    } else {
      params.prompt = prompts_[index % prompts_.size()];
    }
    return params;
  }

 private:
  std::vector<std::string> prompts_;
  float guidance_;
};

struct Sample {
  double latency = 0, first_preview = -1;
  bool ok = false;
};

struct RunResult {
  std::string name;
  double seconds = 0, images_per_second = 0, mean_batch = 0;
  std::vector<Sample> samples;
  double flops_per_second = 0;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

// Sink that timestamps a request and reports completion to the driver.
class TimingSink : public ds::RequestSink {
 public:
  TimingSink(Clock::time_point submitted, std::function<void(const Sample&)> done)
      : submitted_(submitted), done_(std::move(done)) {}
  void OnProgress(int step, int total, const dartserve::Pixels* preview) override {
    if (preview != nullptr && sample_.first_preview < 0) {
      sample_.first_preview = Seconds(Clock::now() - submitted_);
    }
  }
  void OnFinished(absl::StatusOr<ds::Result> result) override {
    sample_.latency = Seconds(Clock::now() - submitted_);
    sample_.ok = result.ok();
    done_(sample_);
  }

 private:
  Clock::time_point submitted_;
  Sample sample_;
  std::function<void(const Sample&)> done_;
};

// Drives one scheduler per engine behind a dispatcher, as the server does for a model's replicas:
// closed loop (`concurrency` in flight until `total` done) when rate <= 0, else open-loop Poisson
// arrivals at `rate` per second for `duration` seconds.
RunResult Drive(const std::string& name, std::span<dm::Engine* const> engines,
                const RequestMaker& make, const ds::SchedulerOptions& options, int total,
                int concurrency, double rate, double duration) {
  std::vector<std::unique_ptr<ds::Scheduler>> schedulers;
  ds::Dispatcher dispatcher;
  for (dm::Engine* engine : engines) {
    schedulers.push_back(std::make_unique<ds::Scheduler>(options, engine));
    schedulers.back()->Start();
    dispatcher.AddReplica(schedulers.back().get());
  }
  std::mutex mu;
  std::condition_variable cv;
  RunResult out{name};
  int submitted = 0, finished = 0;
  std::function<void()> submit_one;
  submit_one = [&] {
    int index;
    {
      std::lock_guard<std::mutex> lock(mu);
      index = submitted++;
    }
    auto req = std::make_unique<ds::Request>();
    req->id = absl::StrCat(name, "-", index);
    req->params = make(index);
    req->preview_every = absl::GetFlag(FLAGS_preview_every);
    req->preview_kind =
        absl::GetFlag(FLAGS_decoded_previews) ? dm::RenderKind::kDecoded : dm::RenderKind::kLinear;
    req->sink = std::make_shared<TimingSink>(Clock::now(), [&, rate](const Sample& s) {
      bool more;
      {
        std::lock_guard<std::mutex> lock(mu);
        out.samples.push_back(s);
        ++finished;
        more = rate <= 0 && submitted < total;
      }
      cv.notify_all();
      if (more) submit_one();  // closed loop: replace the finished request
    });
    if (absl::Status st = dispatcher.Submit(req); !st.ok()) {
      std::cerr << name << ": submit failed: " << st << "\n";
      std::lock_guard<std::mutex> lock(mu);
      ++finished;
      cv.notify_all();
    }
  };

  const auto start = Clock::now();
  if (rate <= 0) {
    for (int i = 0; i < std::min(concurrency, total); ++i) submit_one();
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return finished >= total; });
  } else {
    std::mt19937_64 rng(7);
    std::exponential_distribution<double> gap(rate);
    auto next = start;
    while (Seconds(next - start) < duration) {
      std::this_thread::sleep_until(next);
      submit_one();
      next += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
    }
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return finished >= submitted; });
  }
  out.seconds = Seconds(Clock::now() - start);
  out.images_per_second = out.samples.size() / out.seconds;
  const ds::SchedulerStats stats = dispatcher.stats();
  out.mean_batch = stats.iterations ? double(stats.total_batch_requests) / stats.iterations : 0;
  return out;
}

// Static batching: batches of `batch` requests that start and finish together.
RunResult Static(dm::Dart model, const RequestMaker& make, int total, int batch) {
  dm::Sampler sampler(model);
  RunResult out{"static"};
  const auto start = Clock::now();
  for (int first = 0; first < total; first += batch) {
    std::vector<dm::GenerateParams> params;
    for (int i = first; i < std::min(total, first + batch); ++i) {
      params.push_back(make(i));
    }
    // Every request in the batch waited from the batch's start (closed loop: all arrive at once).
    const auto t0 = Clock::now();
    auto images = sampler.GenerateBatch(params, batch);
    const double latency = Seconds(Clock::now() - t0);
    for (size_t i = 0; i < params.size(); ++i) out.samples.push_back({latency, -1, images.ok()});
  }
  out.seconds = Seconds(Clock::now() - start);
  out.images_per_second = total / out.seconds;
  out.mean_batch = batch;
  return out;
}

nlohmann::json Report(const RunResult& r, double flops_per_image, double peak) {
  std::vector<double> lat, ttfp;
  int errors = 0;
  for (const Sample& s : r.samples) {
    lat.push_back(s.latency);
    if (s.first_preview >= 0) ttfp.push_back(s.first_preview);
    errors += !s.ok;
  }
  const double flops = r.images_per_second * flops_per_image;
  std::cout << absl::StrFormat(
      "%-14s %7.2f img/s  p50 %7.3f s  p95 %7.3f  p99 %7.3f  ttfp p50 %6.3f s"
      "  batch %5.1f  %5.1f GFLOP/s (%4.1f%% of peak)  errors %d\n",
      r.name, r.images_per_second, Percentile(lat, 0.5), Percentile(lat, 0.95),
      Percentile(lat, 0.99), Percentile(ttfp, 0.5), r.mean_batch, flops / 1e9, 100 * flops / peak,
      errors);
  return {{"name", r.name},
          {"images", r.samples.size()},
          {"seconds", r.seconds},
          {"images_per_second", r.images_per_second},
          {"latency_p50_s", Percentile(lat, 0.5)},
          {"latency_p95_s", Percentile(lat, 0.95)},
          {"latency_p99_s", Percentile(lat, 0.99)},
          {"time_to_first_preview_p50_s", Percentile(ttfp, 0.5)},
          {"mean_batch_requests", r.mean_batch},
          {"achieved_flops", flops},
          {"fraction_of_matmul_peak", flops / peak},
          {"errors", errors}};
}

int SequentialImages() {
  const int n = absl::GetFlag(FLAGS_sequential_images);
  return n > 0 ? n : std::max(8, absl::GetFlag(FLAGS_images) / 8);
}

// The plain PyTorch peer's images/s at static batches of `batch` (1: one image after another), run
// as a child process on the same checkpoint, guidance and threads.
absl::StatusOr<double> RunPeer(int batch, int images) {
  const std::string out = (std::filesystem::temp_directory_path() /
                           absl::StrCat("dartserve-bench-peer-", getpid(), ".json"))
                              .string();
  const std::string command = absl::StrFormat(
      "%s --checkpoint '%s' --bench --batch %d --images %d --threads %d --guidance %g --json '%s' "
      ">/dev/null",
      absl::GetFlag(FLAGS_peer_command), absl::GetFlag(FLAGS_checkpoint), batch, images,
      torch::get_num_threads(), absl::GetFlag(FLAGS_guidance), out);
  if (std::system(command.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("the peer failed: ", command));
  }
  std::ifstream file(out);
  const nlohmann::json result = nlohmann::json::parse(file, nullptr, /*allow_exceptions=*/false);
  std::filesystem::remove(out);
  if (!result.is_object() || !result.contains("images_per_second")) {
    return absl::InternalError(absl::StrCat("the peer wrote no result: ", command));
  }
  return result["images_per_second"].get<double>();
}

// The peer one image at a time and at static batch `batch`, against this process's runs of the
// same kind; null when --peer is off.
nlohmann::json ComparePeer(const RunResult& sequential, const RunResult& stat,
                           const RunResult& continuous, int batch, int total) {
  if (!absl::GetFlag(FLAGS_peer)) return nullptr;
  const absl::StatusOr<double> one = RunPeer(1, SequentialImages());
  const absl::StatusOr<double> batched = RunPeer(batch, total);
  if (!one.ok() || !batched.ok()) {
    const std::string error((one.ok() ? batched : one).status().message());
    std::cerr << "dartserve-bench: " << error << "\n";
    return {{"error", error}};
  }
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  const nlohmann::json j = {
      {"sequential_images_per_second", *one},
      {"static_images_per_second", *batched},
      {"batch", batch},
      {"sequential_over_peer", ratio(sequential.images_per_second, *one)},
      {"static_over_peer", ratio(stat.images_per_second, *batched)},
      {"continuous_over_peer_static", ratio(continuous.images_per_second, *batched)}};
  std::cout << absl::StrFormat(
      "peer           %7.2f img/s one at a time, %.2f at static batch %d; ours: sequential "
      "%.2fx, static %.2fx, continuous %.2fx its static\n",
      *one, *batched, batch, j["sequential_over_peer"].get<double>(),
      j["static_over_peer"].get<double>(), j["continuous_over_peer_static"].get<double>());
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s =
          absl::GetFlag(FLAGS_tune_malloc) ? dartserve::TuneMallocForTensors() : absl::OkStatus();
      !s.ok()) {
    std::cerr << "dartserve-bench: " << s.message() << "\n";
    return 1;
  }
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  // Every torch call runs on a lane, as in the server: one OpenMP pool per replica (lane 0 loads
  // and runs everything but the replicas' runs; model/compute_lane.h). The main thread never runs
  // an operator.
  const std::vector<std::shared_ptr<dm::ComputeLane>> lanes =
      dm::MakeLanes({.replicas = absl::GetFlag(FLAGS_replicas)});
  if (lanes.empty()) {
    std::cerr << "dartserve-bench: --replicas is out of range\n";
    return 1;
  }
  const std::shared_ptr<dm::ComputeLane>& lane = lanes.front();
  absl::StatusOr<dm::Dart> model;
  double peak = 0;
  lane->Run([&] {
    model = dm::LoadCheckpoint(absl::GetFlag(FLAGS_checkpoint));
    if (model.ok()) peak = MeasureMatmulPeak();
  });
  if (!model.ok()) {
    std::cerr << "dartserve-bench: " << model.status().message() << "\n";
    return 1;
  }
  const dm::ModelConfig& config = (*model)->config();
  if (absl::GetFlag(FLAGS_peer) &&
      (config.conditioning != dm::Conditioning::kClass || config.latent() ||
       config.head != dm::OutputHead::kMean || config.autoregressive())) {
    std::cerr << "dartserve-bench: --peer: the peer runs class-conditioned pixel DART with the "
                 "mean head only\n";
    return 1;
  }
  const bool guided = absl::GetFlag(FLAGS_guidance) != 1.0;
  const double flops_per_image = dm::FlopsPerImage(config, guided);
  const int total = absl::GetFlag(FLAGS_images);
  std::cout << absl::StrFormat(
      "model %s: %.2f GFLOP/image, matmul peak %.1f GFLOP/s, %d threads, %d replicas\n",
      absl::GetFlag(FLAGS_checkpoint), flops_per_image / 1e9, peak / 1e9, torch::get_num_threads(),
      lanes.size());

  const RequestMaker make(config);
  // Replica i on lane i, all sharing the weights (as LoadEngines builds them).
  std::vector<std::unique_ptr<dm::Engine>> replica_engines;
  std::vector<dm::Engine*> replicas;
  for (const std::shared_ptr<dm::ComputeLane>& replica_lane : lanes) {
    replica_engines.push_back(dm::OnLane(std::make_unique<dm::DartEngine>(*model), replica_lane));
    replicas.push_back(replica_engines.back().get());
  }
  const std::unique_ptr<dm::Engine> recompute_on_lane = dm::OnLane(
      std::make_unique<dm::DartEngine>(*model, dm::SamplerOptions{.kv_cache = false}), lane);
  dm::Engine* const engine[] = {replicas.front()};
  dm::Engine* const recompute_engine[] = {recompute_on_lane.get()};
  // The replicas' runs are measured against every lane's peak (each lane's is the one measured).
  const double replicas_peak = peak * replicas.size();
  const int conc = absl::GetFlag(FLAGS_concurrency);
  ds::SchedulerOptions continuous{.max_batch_requests = conc};
  nlohmann::json runs = nlohmann::json::array();
  // Warm-up (allocator, thread pool) outside the measurements.
  Drive("warmup", replicas, make, continuous, std::min(total, conc), conc, 0, 0);

  const std::vector<std::string> wanted = absl::StrSplit(absl::GetFlag(FLAGS_runs), ',');
  auto want = [&](const char* name) {
    return std::find(wanted.begin(), wanted.end(), name) != wanted.end();
  };
  // Each run that was not asked for stays empty (0 images/s) and is left out of the report.
  RunResult seq, stat, cont, re;
  if (want("sequential")) {
    seq = Drive("sequential", engine, make, {.max_batch_requests = 1}, SequentialImages(), 1, 0, 0);
    runs.push_back(Report(seq, flops_per_image, peak));
  }
  if (want("static")) {
    // On the lane, like every other run. (Worker threads used to be slower because of glibc's
    // per-thread arenas, docs/performance.md "Allocator", and of a second OpenMP pool.)
    lane->Run([&] { stat = Static(*model, make, total, absl::GetFlag(FLAGS_batch)); });
    runs.push_back(Report(stat, flops_per_image, peak));
  }
  if (want("continuous")) {
    cont = Drive("continuous", replicas, make, continuous, total, conc, 0, 0);
    runs.push_back(Report(cont, flops_per_image, replicas_peak));
  }
  if (want("recompute")) {
    re = Drive("recompute", recompute_engine, make, continuous, std::max(8, total / 4), conc, 0, 0);
    runs.push_back(Report(re, flops_per_image, peak));
  }
  // Unloaded latency: one request alone, for the p99-under-load comparison.
  std::vector<double> alone;
  for (const Sample& s : seq.samples) alone.push_back(s.latency);
  const double unloaded = Percentile(alone, 0.5);
  nlohmann::json poisson = nlohmann::json::array();
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_loads), ',')) {
    double frac = 0;
    if (!want("poisson") || cont.images_per_second <= 0) break;
    if (!absl::SimpleAtod(part, &frac) || frac <= 0) continue;
    const double rate = frac * cont.images_per_second;
    const RunResult r = Drive(absl::StrFormat("poisson@%.0f%%", 100 * frac), replicas, make,
                              continuous, 0, conc, rate, absl::GetFlag(FLAGS_poisson_seconds));
    nlohmann::json j = Report(r, flops_per_image, replicas_peak);
    j["offered_rate"] = rate;
    if (unloaded > 0) j["p99_over_unloaded"] = j["latency_p99_s"].get<double>() / unloaded;
    poisson.push_back(j);
  }
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  std::cout << absl::StrFormat(
      "continuous vs sequential %.2fx, vs static %.2fx; KV cache vs recompute %.2fx\n",
      ratio(cont.images_per_second, seq.images_per_second),
      ratio(cont.images_per_second, stat.images_per_second),
      ratio(cont.images_per_second, re.images_per_second));

  const nlohmann::json peer =
      ComparePeer(seq, stat, cont, absl::GetFlag(FLAGS_batch), absl::GetFlag(FLAGS_images));

  if (!absl::GetFlag(FLAGS_json).empty()) {
    nlohmann::json j = {{"checkpoint", absl::GetFlag(FLAGS_checkpoint)},
                        {"threads", torch::get_num_threads()},
                        {"replicas", replicas.size()},
                        {"flops_per_image", flops_per_image},
                        {"matmul_peak_flops", peak},
                        {"guidance", absl::GetFlag(FLAGS_guidance)},
                        {"unloaded_latency_s", unloaded},
                        {"runs", runs},
                        {"poisson", poisson},
                        {"peer", peer}};
    std::ofstream(absl::GetFlag(FLAGS_json)) << j.dump(2) << "\n";
  }
  return 0;
}
