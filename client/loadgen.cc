#include "client/loadgen.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/prometheus_scrape.h"
#include "common/file_io.h"
#include "dartserve/v1/image_generator.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/alarm.h"

namespace dartserve::client {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

Clock::duration ToDuration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

class Runner;

// What a call does besides reading its stream (client/loadgen.h: call kinds).
struct CallPlan {
  CallKind kind = CallKind::kNormal;
  double timeout = 0;  // the call's deadline in seconds; 0: none
  // client_cancel, cancel_rpc, abandon: where to act, as a fraction in [0, 1) of the points from
  // right after Accepted to right after the last Progress.
  double act_at = 0;
  double hold = 0;  // abandon: seconds the unread stream is held before it is dropped
};

// Draws the plan of a call of a kind drawn from `options.mix`.
CallPlan PlanCall(const LoadgenOptions& options, std::mt19937_64& rng) {
  CallPlan plan{.kind = SampleKind(options.mix, rng), .timeout = options.timeout};
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  switch (plan.kind) {
    case CallKind::kNormal:
      break;
    case CallKind::kShortDeadline:
      plan.timeout = options.short_timeout * (0.1 + 0.9 * unit(rng));
      break;
    case CallKind::kAbandon:
      plan.hold = options.abandon_seconds * unit(rng);
      [[fallthrough]];
    case CallKind::kClientCancel:
    case CallKind::kCancelRpc:
      plan.act_at = unit(rng);
      break;
  }
  return plan;
}

// The deadline of a CancelGeneration call; it only looks the id up.
constexpr double kCancelRpcTimeoutSeconds = 30;

// One GenerateImage call. Owns itself: deletes itself in OnDone after reporting to the runner.
// Its reactions run on gRPC's threads one at a time; the CancelGeneration callback and the
// abandon alarm may run beside them, and each holds the call (AddHold) so that OnDone waits.
class Call final : public grpc::ClientReadReactor<v1::GenerateImageResponse> {
 public:
  Call(Runner* runner, v1::GenerateImageRequest request, const CallPlan& plan, bool measured)
      : runner_(runner), request_(std::move(request)), plan_(plan), measured_(measured) {
    record_.kind = plan.kind;
    record_.asked_images = std::max<int>(1, static_cast<int>(request_.num_images()));
  }

  // Starts the call; times count from `arrival`. `this` may be deleted any time after (from a
  // gRPC thread). `stub` and `connection` must outlive the call.
  void Start(v1::ImageGenerator::Stub* stub, const ConnectionOptions& connection,
             Clock::time_point arrival) {
    stub_ = stub;
    connection_ = &connection;
    PrepareContext(connection, plan_.timeout, &context_);
    start_ = arrival;
    stub->async()->GenerateImage(&context_, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  // Thread-safe; valid until OnDone has reported to the runner.
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows
    Record();
    if (!acted_ && ActPointReached()) {
      acted_ = true;
      if (Act()) return;  // stops reading
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override;

 private:
  // Notes the message in response_ in the record.
  void Record() {
    const double t = Seconds(Clock::now() - start_);
    switch (response_.event_case()) {
      case v1::GenerateImageResponse::kAccepted: {
        if (record_.to_accepted < 0) record_.to_accepted = t;
        const v1::Accepted& accepted = response_.accepted();
        const int points = static_cast<int>(accepted.total_steps() * accepted.num_images()) + 1;
        act_after_ = std::min(points - 1, static_cast<int>(plan_.act_at * points));
        break;
      }
      case v1::GenerateImageResponse::kProgress:
        ++progress_seen_;
        if (!response_.progress().preview_png().empty()) {
          if (record_.first_preview < 0) record_.first_preview = t;
          ++record_.previews;
        }
        break;
      case v1::GenerateImageResponse::kResult:
        ++record_.images;
        break;
      default:
        break;
    }
  }

  bool ActPointReached() const {
    return plan_.kind != CallKind::kNormal && plan_.kind != CallKind::kShortDeadline &&
           (record_.to_accepted >= 0 || progress_seen_ > 0) && progress_seen_ >= act_after_;
  }

  // Does what the call's kind does mid-stream (in a reaction, where AddHold is allowed). Returns
  // true when the call stops reading.
  bool Act() {
    switch (plan_.kind) {
      case CallKind::kClientCancel:
        context_.TryCancel();
        return false;
      case CallKind::kCancelRpc:
        AddHold();
        cancel_request_.set_request_id(request_.request_id());
        PrepareContext(*connection_, kCancelRpcTimeoutSeconds, &cancel_context_);
        stub_->async()->CancelGeneration(&cancel_context_, &cancel_request_, &cancel_response_,
                                         [this](grpc::Status status) {
                                           cancel_rpc_code_ = status.error_code();
                                           RemoveHold();
                                         });
        return false;
      case CallKind::kAbandon:
        AddHold();
        abandon_alarm_.Set(std::chrono::system_clock::now() +
                               std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                   std::chrono::duration<double>(plan_.hold)),
                           [this](bool) {
                             context_.TryCancel();
                             RemoveHold();
                           });
        return true;
      case CallKind::kNormal:
      case CallKind::kShortDeadline:
        break;
    }
    return false;
  }

  Runner* runner_;
  v1::GenerateImageRequest request_;
  const CallPlan plan_;
  const bool measured_;
  v1::ImageGenerator::Stub* stub_ = nullptr;
  const ConnectionOptions* connection_ = nullptr;
  grpc::ClientContext context_;
  v1::GenerateImageResponse response_;
  Clock::time_point start_;
  CallRecord record_;
  // The reactions' own: the act point (in Progress messages seen) and whether it was acted on.
  int act_after_ = 0;
  int progress_seen_ = 0;
  bool acted_ = false;
  // cancel_rpc: the CancelGeneration call, and its status (set by its callback).
  grpc::ClientContext cancel_context_;
  v1::CancelGenerationRequest cancel_request_;
  v1::CancelGenerationResponse cancel_response_;
  std::optional<grpc::StatusCode> cancel_rpc_code_;
  grpc::Alarm abandon_alarm_;
};

// Starts calls and collects their records. Launch and the waits are called from one thread (the
// one in RunLoad); Done runs on gRPC threads.
class Runner {
 public:
  Runner(v1::ImageGenerator::Stub* stub, const LoadgenOptions& options,
         const std::atomic<bool>& stop)
      : stub_(stub),
        options_(options),
        stop_(stop),
        rng_(options.seed),
        plan_rng_(options.seed ^ 0x5851f42d4c957f2dULL),  // independent of the requests
        run_tag_(absl::StrCat(absl::Hex(std::random_device()(), absl::kZeroPad8))) {}

  bool stopped() const { return stop_.load(); }

  // Warm-up calls are normal ones.
  void Launch(bool measured, Clock::time_point arrival) {
    v1::GenerateImageRequest request = SampleRequest(options_.mix, rng_);
    const CallPlan plan =
        measured ? PlanCall(options_, plan_rng_) : CallPlan{.timeout = options_.timeout};
    if (plan.kind == CallKind::kCancelRpc) {
      // Unique across runs too, so that two load generators never collide on an id.
      request.set_request_id(absl::StrCat("loadgen-", run_tag_, "-", ++ids_));
    }
    auto* call = new Call(this, std::move(request), plan, measured);
    {
      std::lock_guard lock(mu_);
      in_flight_.insert(call);
      if (measured) ++sent_;
    }
    call->Start(stub_, options_.connection, arrival);
  }

  void Done(Call* call, bool measured, const CallRecord& record) {
    std::lock_guard lock(mu_);
    in_flight_.erase(call);
    if (measured) records_.push_back(record);
    cv_.notify_all();
  }

  size_t InFlight() {
    std::lock_guard lock(mu_);
    return in_flight_.size();
  }

  // Waits until fewer than `limit` calls are in flight or `until` passes; true in the first case.
  bool WaitBelow(size_t limit, Clock::time_point until) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, until, [&] { return in_flight_.size() < limit; });
  }

  // Waits for every call to end; once stopped, cancels them (once) and keeps waiting.
  void Drain() {
    bool cancelled = false;
    while (!WaitBelow(1, Clock::now() + std::chrono::milliseconds(100))) {
      if (stopped() && !cancelled) {
        CancelAll();
        cancelled = true;
      }
    }
  }

  int64_t sent() {
    std::lock_guard lock(mu_);
    return sent_;
  }
  std::vector<CallRecord> TakeRecords() {
    std::lock_guard lock(mu_);
    return std::move(records_);
  }
  int64_t completed() {
    std::lock_guard lock(mu_);
    return static_cast<int64_t>(records_.size());
  }

 private:
  void CancelAll() {
    std::lock_guard lock(mu_);
    for (Call* call : in_flight_) call->Cancel();
  }

  v1::ImageGenerator::Stub* const stub_;
  const LoadgenOptions& options_;
  const std::atomic<bool>& stop_;
  // The launching thread only.
  std::mt19937_64 rng_;       // requests
  std::mt19937_64 plan_rng_;  // kinds and their timings
  const std::string run_tag_;
  int64_t ids_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::set<Call*> in_flight_;
  std::vector<CallRecord> records_;
  int64_t sent_ = 0;
};

void Call::OnDone(const grpc::Status& status) {
  record_.code = status.error_code();
  record_.cancel_rpc = cancel_rpc_code_;
  record_.end = Clock::now();
  record_.latency = Seconds(record_.end - start_);
  runner_->Done(this, measured_, record_);
  delete this;
}

// Writes a one-line status to `log` every few seconds while a phase runs.
class Ticker {
 public:
  Ticker(Runner* runner, std::ostream& log)
      : runner_(runner), log_(log), start_(Clock::now()), next_(start_ + kEvery) {}
  void Tick() {
    const Clock::time_point now = Clock::now();
    if (now < next_) return;
    next_ = now + kEvery;
    log_ << "dartserve-loadgen: t=" << static_cast<int>(Seconds(now - start_)) << "s sent "
         << runner_->sent() << ", done " << runner_->completed() << ", in flight "
         << runner_->InFlight() << "\n";
  }

 private:
  static constexpr std::chrono::seconds kEvery{5};
  Runner* runner_;
  std::ostream& log_;
  Clock::time_point start_, next_;
};

// Samples the server's RSS from construction until Stop, on a thread of its own, so that a slow
// scrape delays neither the calls nor the clock of the loop that starts them.
class RssSampler {
 public:
  RssSampler(std::string address, double every_seconds, Clock::time_point start)
      : address_(std::move(address)),
        every_(ToDuration(every_seconds)),
        start_(start),
        thread_([this] { Loop(); }) {}
  ~RssSampler() { Stop(); }

  // Takes one last sample, ends the thread and moves the samples into `run`. Idempotent.
  void Stop(LoadRun* run = nullptr) {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (run == nullptr) return;
    run->server_rss = std::move(samples_);
    run->rss_scrape_errors = errors_;
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    for (bool last = false; !last;) {
      last = stop_;
      lock.unlock();
      Sample();
      lock.lock();
      if (!last) cv_.wait_for(lock, every_, [this] { return stop_; });
    }
  }

  void Sample() {
    const absl::StatusOr<double> bytes = ScrapeSample(address_, "process_resident_memory_bytes");
    if (!bytes.ok()) {
      ++errors_;
      return;
    }
    samples_.push_back({.seconds = Seconds(Clock::now() - start_), .bytes = *bytes});
  }

  const std::string address_;
  const Clock::duration every_;
  const Clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  // The sampling thread's until it is joined.
  std::vector<RssSample> samples_;
  int64_t errors_ = 0;
  std::thread thread_;  // last: starts once the rest is initialised
};

// Closed loop until `end` or `max_calls` calls have started (< 0: no limit).
void RunClosedLoop(Runner& runner, size_t concurrency, Clock::time_point end, int64_t max_calls,
                   bool measured, std::ostream& log) {
  Ticker ticker(&runner, log);
  for (int64_t started = 0; max_calls < 0 || started < max_calls;) {
    if (runner.stopped() || Clock::now() >= end) return;
    const Clock::time_point wake = std::min(end, Clock::now() + std::chrono::milliseconds(100));
    if (runner.WaitBelow(concurrency, wake)) {
      runner.Launch(measured, Clock::now());
      ++started;
    }
    if (measured) ticker.Tick();
  }
}

// The arrival times of an open loop: Poisson at `rate` per second from the first call, which
// arrives at once, until `end`.
class Arrivals {
 public:
  Arrivals(double rate, uint64_t seed, Clock::time_point end)
      : rng_(seed ^ 0x9e3779b97f4a7c15ULL),  // independent of the request sequence
        gap_(rate),
        next_(Clock::now()),
        end_(end) {}

  // Appends every arrival due by `now` to `waiting`.
  void Collect(Clock::time_point now, std::deque<Clock::time_point>& waiting) {
    for (; !done_ && next_ <= now; next_ += ToDuration(gap_(rng_))) {
      if (next_ >= end_) {
        done_ = true;
      } else {
        waiting.push_back(next_);
      }
    }
  }
  // Whether every arrival has been collected.
  bool done() const { return done_; }
  Clock::time_point next() const { return next_; }

 private:
  std::mt19937_64 rng_;
  std::exponential_distribution<double> gap_;
  Clock::time_point next_;
  const Clock::time_point end_;
  bool done_ = false;
};

// Open loop: Poisson arrivals at `rate` per second until `end`, at most `cap` in flight, the
// rest waiting in arrival order. Returns when every arrival has started (or once stopped), with
// the largest number that waited at once.
int64_t RunOpenLoop(Runner& runner, double rate, size_t cap, Clock::time_point end, uint64_t seed,
                    std::ostream& log) {
  Ticker ticker(&runner, log);
  Arrivals arrivals(rate, seed, end);
  std::deque<Clock::time_point> waiting;
  int64_t max_waiting = 0;
  while (!runner.stopped()) {
    const Clock::time_point now = Clock::now();
    arrivals.Collect(now, waiting);
    max_waiting = std::max(max_waiting, static_cast<int64_t>(waiting.size()));
    while (!waiting.empty() && runner.InFlight() < cap) {
      runner.Launch(/*measured=*/true, waiting.front());
      waiting.pop_front();
    }
    if (arrivals.done() && waiting.empty()) break;
    ticker.Tick();
    // Sleep until the next arrival or, when calls wait, a free slot; at most 100 ms, so that a
    // stop is noticed promptly.
    Clock::time_point wake = now + std::chrono::milliseconds(100);
    if (!arrivals.done()) wake = std::min(wake, arrivals.next());
    if (waiting.empty()) {
      std::this_thread::sleep_until(wake);
    } else {
      runner.WaitBelow(cap, wake);
    }
  }
  return max_waiting;
}

// Waits for the connection, then requires health SERVING (a server without the health service,
// UNIMPLEMENTED, is accepted).
absl::Status CheckServer(const std::shared_ptr<grpc::Channel>& channel,
                         const ConnectionOptions& connection, double timeout) {
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(timeout));
  if (!channel->WaitForConnected(deadline)) {
    return absl::UnavailableError(
        absl::StrCat("server ", connection.server, " unreachable within ", timeout, " s"));
  }
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  PrepareContext(connection, timeout, &context);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status =
      health->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) return absl::OkStatus();
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("health check: ", FormatStatus(status)));
  }
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(
        absl::StrCat("server is ",
                     grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())));
  }
  return absl::OkStatus();
}

// "closed loop, 16 in flight" or "open loop, 20 calls/s, at most 64 in flight".
std::string ModeText(const LoadgenOptions& options) {
  if (options.rate > 0) {
    return absl::StrCat("open loop, ", options.rate, " calls/s, at most ", options.concurrency,
                        " in flight");
  }
  return absl::StrCat("closed loop, ", options.concurrency, " in flight");
}

}  // namespace

absl::Status ValidateLoadgenOptions(const LoadgenOptions& options) {
  // Written as !(x >= 0) rather than x < 0 so that NaN is rejected too.
  if (options.concurrency < 1) return absl::InvalidArgumentError("--concurrency must be >= 1");
  if (!(options.rate >= 0)) return absl::InvalidArgumentError("--rate must be >= 0");
  if (!(options.duration > 0)) return absl::InvalidArgumentError("--duration must be > 0");
  if (options.warmup < 0) return absl::InvalidArgumentError("--warmup must be >= 0");
  if (!(options.timeout >= 0)) return absl::InvalidArgumentError("--timeout must be >= 0");
  if (!(options.short_timeout > 0)) {
    return absl::InvalidArgumentError("--short_timeout must be > 0");
  }
  if (!(options.abandon_seconds >= 0)) {
    return absl::InvalidArgumentError("--abandon_seconds must be >= 0");
  }
  if (!(options.rss_every > 0)) return absl::InvalidArgumentError("--rss_every must be > 0");
  if (options.soak && options.metrics.empty()) {
    return absl::InvalidArgumentError(
        "--soak needs --metrics (host:port of the server's metrics endpoint) to follow its RSS");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> ConnectForLoad(const LoadgenOptions& options) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = CreateChannel(options.connection);
  if (!channel.ok()) return channel.status();
  if (absl::Status s = CheckServer(*channel, options.connection, options.connect_timeout);
      !s.ok()) {
    return s;
  }
  if (!options.metrics.empty()) {
    const absl::StatusOr<double> rss =
        ScrapeSample(options.metrics, "process_resident_memory_bytes");
    if (!rss.ok()) {
      return absl::Status(rss.status().code(), absl::StrCat("--metrics: ", rss.status().message()));
    }
  }
  return channel;
}

absl::Status ApplySoakDefaults(const std::shared_ptr<grpc::Channel>& channel,
                               LoadgenOptions* options) {
  LoadMix& mix = options->mix;
  std::vector<std::string> added;
  if (mix.kinds.empty()) {
    std::vector<std::string> names;
    for (const CallKind kind : kAllCallKinds) {
      mix.kinds.push_back(kind);
      names.emplace_back(CallKindName(kind));
    }
    added.push_back(absl::StrCat("kind:", absl::StrJoin(names, "|")));
  }
  if (mix.models.empty()) {
    grpc::ClientContext context;
    PrepareContext(options->connection, options->connect_timeout, &context);
    v1::ListModelsResponse response;
    const grpc::Status status =
        v1::ImageGenerator::NewStub(channel)->ListModels(&context, {}, &response);
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat("ListModels: ", FormatStatus(status)));
    }
    for (const v1::ModelInfo& model : response.models()) mix.models.push_back(model.name());
    if (!mix.models.empty())
      added.push_back(absl::StrCat("model:", absl::StrJoin(mix.models, "|")));
  }
  for (const std::string& entry : added) {
    absl::StrAppend(&options->mix_text, options->mix_text.empty() ? "" : ",", entry);
  }
  return absl::OkStatus();
}

LoadRun RunLoad(const std::shared_ptr<grpc::Channel>& channel, const LoadgenOptions& options,
                const std::atomic<bool>& stop, std::ostream& log) {
  auto stub = v1::ImageGenerator::NewStub(channel);
  Runner runner(stub.get(), options, stop);
  const size_t concurrency = static_cast<size_t>(options.concurrency);
  if (options.warmup > 0) {
    RunClosedLoop(runner, concurrency, Clock::time_point::max(), options.warmup,
                  /*measured=*/false, log);
    runner.Drain();
  }
  LoadRun run;
  run.start = Clock::now();
  std::optional<RssSampler> rss;
  if (!options.metrics.empty()) rss.emplace(options.metrics, options.rss_every, run.start);
  const Clock::time_point end = run.start + ToDuration(options.duration);
  if (options.rate > 0) {
    run.max_waiting = RunOpenLoop(runner, options.rate, concurrency, end, options.seed, log);
  } else {
    RunClosedLoop(runner, concurrency, end, -1, /*measured=*/true, log);
  }
  runner.Drain();
  if (rss) rss->Stop(&run);
  run.interrupted = stop.load();
  run.sent = runner.sent();
  run.records = runner.TakeRecords();
  return run;
}

absl::Status RunLoadgen(const std::shared_ptr<grpc::Channel>& channel,
                        const LoadgenOptions& options, const std::atomic<bool>& stop,
                        std::ostream& out, std::ostream& log) {
  log << "dartserve-loadgen: " << options.connection.server << ", " << ModeText(options) << ", "
      << options.duration << " s, mix \"" << options.mix_text << "\""
      << (options.warmup ? absl::StrCat(", warm-up ", options.warmup) : "") << "\n";
  const LoadSummary summary = Summarize(RunLoad(channel, options, stop, log));
  out << ReportText(options, summary) << std::flush;
  if (!options.json.empty()) {
    if (absl::Status s =
            WriteFileAtomically(options.json, ReportJson(options, summary).dump(2) + "\n");
        !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("cannot write ", options.json, ": ", s.message()));
    }
  }
  if (summary.lost > 0) {
    return absl::DataLossError(absl::StrCat(
        summary.lost, " calls were lost: they ended OK without every image they asked for"));
  }
  return absl::OkStatus();
}

}  // namespace dartserve::client
