// dartserve-client: the command-line client of the dartserve gRPC API.
//
//   dartserve-client generate --class 7 --seed 1 [--n 4] [--out out/client]
//   dartserve-client generate --prompt sneaker --guidance 3 --priority interactive
//   dartserve-client models | info | health
//   dartserve-client cancel REQUEST_ID
//
// Common flags: --server host:port, --token (bearer token), --tls_ca PATH (TLS; absent:
// plaintext), --max_message_mb, --timeout SECONDS.
//
// `generate` writes every preview as <out>/<request_id>_img<i>_step<k>.png and every final image
// as <out>/<request_id>_img<i>.png. On a terminal it draws the latest previews live, redrawn in
// place (client/terminal.h); otherwise it prints one plain progress line per step. Exit status:
// 0 on success, 1 on any error (the gRPC status code name and message on stderr), 130 when
// interrupted with Ctrl-C (the call is cancelled first, so the server frees its memory at once).
#include <semaphore.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/terminal.h"
#include "common/file_io.h"
#include "common/png.h"
#include "dartserve/v1/image_generator.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(double, timeout, 0,
          "Call deadline in seconds (queue time counts). 0: none for generate, 30 s otherwise.");

ABSL_FLAG(std::optional<std::string>, prompt, std::nullopt,
          "generate: text prompt (a class name for class-conditional models).");
ABSL_FLAG(std::optional<int32_t>, class, std::nullopt, "generate: class id.");
ABSL_FLAG(std::string, model, "", "generate: model name (empty: the server's default).");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "generate: seed of the first image; image i uses seed + i (absent: random).");
ABSL_FLAG(int, steps, 0, "generate: denoising steps (0: the model's own).");
ABSL_FLAG(std::optional<float>, guidance, std::nullopt,
          "generate: classifier-free guidance scale in [0, 20] (absent: the model's default).");
ABSL_FLAG(int, flow_steps, 0,
          "generate: flow-head models: ODE steps per denoising step (0: the model's default).");
ABSL_FLAG(std::optional<float>, temperature, std::nullopt,
          "generate: sampling temperature in (0, 2] (absent: 1).");
ABSL_FLAG(int, n, 1, "generate: number of images, 1 .. 16.");
ABSL_FLAG(int, preview_every, 1, "generate: a preview every this many steps (0: none).");
ABSL_FLAG(int, preview_max_side, 0,
          "generate: previews downscaled to at most this many pixels per side (0: full size).");
ABSL_FLAG(std::string, priority, "", "generate: interactive, normal or batch (empty: normal).");
ABSL_FLAG(std::string, request_id, "",
          "generate: request id (for cancel; empty: the server picks one).");
ABSL_FLAG(std::string, preview_kind, "",
          "generate: how a latent model makes previews: linear (near-free, the server's default) "
          "or decoded (the full decoder).");
ABSL_FLAG(std::string, out, "out/client", "generate: folder for preview and final PNGs.");

namespace {

namespace dc = dartserve::client;
namespace v1 = dartserve::v1;
using Clock = std::chrono::steady_clock;

constexpr char kUsage[] =
    "dartserve-client COMMAND [flags]\n"
    "\n"
    "Commands:\n"
    "  generate (--prompt TEXT | --class N) [--model NAME] [--seed S] [--steps N]\n"
    "           [--guidance G] [--temperature T] [--flow_steps S] [--n N] [--preview_every N]\n"
    "           [--preview_max_side N] [--preview_kind linear|decoded]\n"
    "           [--priority interactive|normal|batch]\n"
    "           [--request_id ID] [--timeout SECONDS] [--out DIR]\n"
    "  models   list the served models\n"
    "  info     server version, uptime and load\n"
    "  health   grpc.health.v1 Check: SERVING (exit 0) or NOT_SERVING (exit 1)\n"
    "  cancel ID  cancel an in-flight generation\n"
    "\n"
    "Common flags: --server host:port --token TOKEN --tls_ca PATH --max_message_mb N\n"
    "\n"
    "Examples with the shipped models:\n"
    "  generate --class 7 --n 2                           # fmnist-dart-fm: two sneakers\n"
    "  generate --model scenes64-dart --prompt \"a red circle to the left of a blue square\"\n"
    "  generate --model emoji-dart --prompt \"red apple, twemoji style\" --n 4\n"
    "  generate --model emoji-dart --prompt \"a cat face drawn in the noto style\"\n"
    "  generate --model emoji-dart --prompt \"rocket\"         # no style: the model picks\n";

constexpr double kUnaryTimeoutSeconds = 30;

int Fail(absl::string_view message) {
  std::cerr << "dartserve-client: " << message << "\n";
  return 1;
}

int Fail(const grpc::Status& status) { return Fail(dc::FormatStatus(status)); }

double UnaryTimeout() {
  const double t = absl::GetFlag(FLAGS_timeout);
  return t > 0 ? t : kUnaryTimeoutSeconds;
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string Fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, value);
  return buffer;
}

// --- Ctrl-C -----------------------------------------------------------------------------------
//
// The signal handler may only do async-signal-safe work, and ClientContext::TryCancel is not
// such work, so the handler sets a flag and posts a semaphore; a helper thread wakes up and
// cancels the call. SA_RESETHAND makes a second Ctrl-C kill the process the ordinary way.

std::atomic<bool> g_interrupted{false};
sem_t g_wake;

void OnInterrupt(int) {
  g_interrupted.store(true);
  sem_post(&g_wake);
}

class CancelOnInterrupt {
 public:
  explicit CancelOnInterrupt(grpc::ClientContext* context) {
    sem_init(&g_wake, 0, 0);
    struct sigaction action = {};
    action.sa_handler = OnInterrupt;
    action.sa_flags = SA_RESETHAND;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, nullptr);
    thread_ = std::thread([context] {
      while (sem_wait(&g_wake) != 0) {
      }
      if (g_interrupted.load()) context->TryCancel();
    });
  }
  ~CancelOnInterrupt() {
    signal(SIGINT, SIG_DFL);
    sem_post(&g_wake);  // wakes the thread when no signal came
    thread_.join();
  }

 private:
  std::thread thread_;
};

// --- generate ---------------------------------------------------------------------------------

// The live picture: the latest state (preview or final) of every image of the call, side by
// side, one-pixel gaps, wrapped to the terminal width.
class PreviewGrid {
 public:
  explicit PreviewGrid(int num_images) : images_(std::max(num_images, 1)) {}

  void Set(int index, dartserve::Pixels pixels) {
    if (index >= 0 && index < static_cast<int>(images_.size())) images_[index] = std::move(pixels);
  }

  // Half-block text of the grid, fitted to `columns` x `pixel_rows`; "" before any image.
  std::string Render(int columns, int pixel_rows) const {
    int cell_w = 0, cell_h = 0, channels = 1;
    for (const dartserve::Pixels& p : images_) {
      cell_w = std::max(cell_w, p.width);
      cell_h = std::max(cell_h, p.height);
      channels = std::max(channels, p.channels >= 3 ? 3 : 1);
    }
    if (cell_w == 0 || cell_h == 0) return "";
    constexpr int kGap = 1;
    const int n = static_cast<int>(images_.size());
    const int per_row = std::clamp((columns + kGap) / (cell_w + kGap), 1, n);
    const int rows = (n + per_row - 1) / per_row;
    dartserve::Pixels canvas;
    canvas.width = per_row * cell_w + (per_row - 1) * kGap;
    canvas.height = rows * cell_h + (rows - 1) * kGap;
    canvas.channels = channels;
    canvas.data.assign(static_cast<size_t>(canvas.width) * canvas.height * channels, 0);
    for (int i = 0; i < n; ++i) {
      const dartserve::Pixels& src = images_[i];
      if (src.width == 0) continue;
      const dartserve::Pixels cell = (src.width == cell_w && src.height == cell_h)
                                         ? src
                                         : dc::ResizePixels(src, cell_w, cell_h);
      const int x0 = (i % per_row) * (cell_w + kGap), y0 = (i / per_row) * (cell_h + kGap);
      for (int y = 0; y < cell_h; ++y) {
        for (int x = 0; x < cell_w; ++x) {
          for (int c = 0; c < channels; ++c) {
            const int sc = cell.channels >= 3 ? c : 0;
            canvas.data[(static_cast<size_t>(y0 + y) * canvas.width + x0 + x) * channels + c] =
                cell.data[(static_cast<size_t>(y) * cell_w + x) * cell.channels + sc];
          }
        }
      }
    }
    // Small images (28 x 28) are enlarged by a whole factor so that they are legible.
    const dc::Size fit = dc::FitSize(canvas.width, canvas.height, columns, pixel_rows, true);
    if (fit.width != canvas.width) canvas = dc::ResizePixels(canvas, fit.width, fit.height);
    return dc::RenderHalfBlocks(canvas, columns, pixel_rows);
  }

 private:
  std::vector<dartserve::Pixels> images_;
};

// Writes to stdout either through the live area (terminal) or as plain lines.
class Output {
 public:
  explicit Output(bool live) : live_(live) {}
  bool live() const { return live_; }

  void Line(absl::string_view line) {
    if (live_) {
      std::cout << area_.Log(line) << std::flush;
    } else {
      std::cout << line << "\n" << std::flush;
    }
  }
  void Frame(const std::string& picture, absl::string_view progress) {
    std::cout << area_.Update(absl::StrCat(picture, progress, "\n")) << std::flush;
  }

 private:
  bool live_;
  dc::LiveArea area_;
};

absl::StatusOr<v1::GenerateImageRequest> BuildRequest() {
  v1::GenerateImageRequest request;
  const std::optional<std::string> prompt = absl::GetFlag(FLAGS_prompt);
  const std::optional<int32_t> class_id = absl::GetFlag(FLAGS_class);
  if (prompt && class_id) return absl::InvalidArgumentError("give --prompt or --class, not both");
  if (prompt) request.set_prompt(*prompt);
  if (class_id) request.set_class_id(*class_id);
  request.set_model(absl::GetFlag(FLAGS_model));
  if (const auto seed = absl::GetFlag(FLAGS_seed)) request.set_seed(*seed);
  if (const auto g = absl::GetFlag(FLAGS_guidance)) request.set_guidance_scale(*g);
  if (const auto t = absl::GetFlag(FLAGS_temperature)) request.set_temperature(*t);
  if (const int f = absl::GetFlag(FLAGS_flow_steps); f > 0) request.set_flow_steps(f);
  // Negative values cannot be expressed on the wire (unsigned fields); range checks beyond that
  // are the server's, so that its messages are the single source of truth.
  const std::pair<const char*, int> counts[] = {
      {"--steps", absl::GetFlag(FLAGS_steps)},
      {"--n", absl::GetFlag(FLAGS_n)},
      {"--preview_every", absl::GetFlag(FLAGS_preview_every)},
      {"--preview_max_side", absl::GetFlag(FLAGS_preview_max_side)}};
  for (const auto& [name, value] : counts) {
    if (value < 0) return absl::InvalidArgumentError(absl::StrCat(name, " must be >= 0"));
  }
  request.set_steps(absl::GetFlag(FLAGS_steps));
  request.set_num_images(absl::GetFlag(FLAGS_n));
  request.mutable_preview()->set_every_n_steps(absl::GetFlag(FLAGS_preview_every));
  request.mutable_preview()->set_max_side(absl::GetFlag(FLAGS_preview_max_side));
  if (const std::string k = absl::GetFlag(FLAGS_preview_kind); !k.empty()) {
    absl::StatusOr<v1::PreviewKind> kind = dc::ParsePreviewKind(k);
    if (!kind.ok()) return kind.status();
    request.mutable_preview()->set_kind(*kind);
  }
  if (const std::string p = absl::GetFlag(FLAGS_priority); !p.empty()) {
    absl::StatusOr<v1::Priority> priority = dc::ParsePriority(p);
    if (!priority.ok()) return priority.status();
    request.set_priority(*priority);
  }
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  return request;
}

// Shows one generate call as its responses arrive: writes every preview and result PNG to the
// output folder and reports them, either live on a terminal (a redrawn picture and progress
// line) or as plain lines. Not thread-safe; the reading thread owns it.
class GenerateView {
 public:
  GenerateView(std::string out_dir, const v1::GenerateImageRequest& request)
      : out_(dc::StdoutIsTerminal()),
        terminal_(dc::TerminalSize()),
        // Leave room for the log lines above the picture; 32 lines is plenty for small models.
        max_pixel_rows_(2 * std::clamp(terminal_.height - 6, 4, 32)),
        out_dir_(std::move(out_dir)),
        request_id_(request.request_id()),
        num_images_(std::max<int>(request.num_images(), 1)),
        grid_(num_images_),
        start_(Clock::now()) {}

  void Show(const v1::GenerateImageResponse& response) {
    if (response.has_accepted()) {
      ShowAccepted(response.accepted());
    } else if (response.has_progress()) {
      ShowProgress(response.progress());
    } else if (response.has_result()) {
      ShowResult(response.result());
    }
  }

  // The closing line of a successful call.
  void ShowDone() {
    out_.Line(absl::StrCat("done: ", results_, " image(s) in ", Fixed(SecondsSince(start_), 2),
                           " s, written to ", out_dir_));
  }

 private:
  void ShowAccepted(const v1::Accepted& a) {
    // The server's id names the files; its image count sizes the grid.
    request_id_ = a.request_id();
    num_images_ = static_cast<int>(a.num_images());
    grid_ = PreviewGrid(num_images_);
    out_.Line(absl::StrCat("accepted: request ", a.request_id(), ", model ", a.model(), ", seed ",
                           a.seed(), ", queue position ", a.queue_position(), ", ", a.num_images(),
                           " image(s) x ", a.total_steps(), " steps"));
  }

  void ShowProgress(const v1::Progress& p) {
    const int index = static_cast<int>(p.image_index());
    if (!p.preview_png().empty()) {
      const std::string path = dc::PreviewPath(out_dir_, request_id_, index, p.step());
      if (!dartserve::WriteFileAtomically(path, p.preview_png()).ok()) {
        out_.Line(absl::StrCat("cannot write ", path));
      }
      Draw(index, p.preview_png());
    }
    const std::string line =
        dc::FormatProgressLine(index, num_images_, static_cast<int>(p.step()),
                               static_cast<int>(p.total_steps()), SecondsSince(start_));
    if (out_.live()) {
      out_.Frame(picture_, line);
    } else {
      out_.Line(line);
    }
  }

  void ShowResult(const v1::Result& r) {
    const int index = static_cast<int>(r.image_index());
    const std::string path = dc::ResultPath(out_dir_, request_id_, index);
    const bool written = dartserve::WriteFileAtomically(path, r.png()).ok();
    Draw(index, r.png());
    ++results_;
    const v1::Timings& t = r.timings();
    out_.Line(absl::StrCat("image ", index + 1, "/", num_images_, ": seed ", r.seed(), ", ",
                           r.width(), "x", r.height(), ", queue ", Fixed(t.queue_seconds(), 3),
                           " s, compute ", Fixed(t.compute_seconds(), 3), " s, encode ",
                           Fixed(t.encode_seconds(), 4), " s -> ",
                           written ? path : absl::StrCat("(cannot write ", path, ")")));
    if (out_.live()) {
      out_.Frame(picture_, absl::StrCat(results_, "/", num_images_, " image(s) done, ",
                                        Fixed(SecondsSince(start_), 2), "s"));
    }
  }

  // On a terminal, puts `png` in the grid as image `index` and re-renders the picture; an
  // undecodable PNG leaves the picture as it was. Elsewhere nothing is decoded.
  void Draw(int index, const std::string& png) {
    if (!out_.live()) return;
    absl::StatusOr<dartserve::Pixels> pixels = dartserve::DecodePng(png);
    if (!pixels.ok()) return;
    grid_.Set(index, *std::move(pixels));
    picture_ = grid_.Render(terminal_.width, max_pixel_rows_);
  }

  Output out_;
  const dc::Size terminal_;
  const int max_pixel_rows_;
  const std::string out_dir_;
  std::string request_id_;
  int num_images_;
  int results_ = 0;
  PreviewGrid grid_;
  std::string picture_;
  const Clock::time_point start_;
};

int Generate(v1::ImageGenerator::Stub& stub, const dc::ConnectionOptions& connection) {
  absl::StatusOr<v1::GenerateImageRequest> request = BuildRequest();
  if (!request.ok()) return Fail(request.status().message());
  const std::string out_dir = absl::GetFlag(FLAGS_out);
  std::error_code error;
  std::filesystem::create_directories(out_dir, error);
  if (error) return Fail(absl::StrCat("--out ", out_dir, ": ", error.message()));

  grpc::ClientContext context;
  dc::PrepareContext(connection, absl::GetFlag(FLAGS_timeout), &context);
  CancelOnInterrupt cancel_on_interrupt(&context);

  GenerateView view(out_dir, *request);
  std::unique_ptr<grpc::ClientReader<v1::GenerateImageResponse>> reader =
      stub.GenerateImage(&context, *request);
  v1::GenerateImageResponse response;
  while (reader->Read(&response)) view.Show(response);
  const grpc::Status status = reader->Finish();
  if (g_interrupted.load()) {
    std::cerr << "dartserve-client: interrupted; call cancelled\n";
    return 130;
  }
  if (!status.ok()) return Fail(status);
  view.ShowDone();
  return 0;
}

// --- models, info, cancel, health -------------------------------------------------------------

std::string HumanCount(uint64_t n) {
  if (n >= 1'000'000'000) return absl::StrCat(Fixed(n / 1e9, 1), "B");
  if (n >= 1'000'000) return absl::StrCat(Fixed(n / 1e6, 1), "M");
  if (n >= 1'000) return absl::StrCat(Fixed(n / 1e3, 1), "K");
  return absl::StrCat(n);
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

int Models(v1::ImageGenerator::Stub& stub, const dc::ConnectionOptions& connection) {
  grpc::ClientContext context;
  dc::PrepareContext(connection, UnaryTimeout(), &context);
  v1::ListModelsResponse response;
  const grpc::Status status = stub.ListModels(&context, v1::ListModelsRequest(), &response);
  if (!status.ok()) return Fail(status);
  // CLASSES is last: with names it is the one long column.
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "CONDITIONING", "SIZE", "STEPS", "GUIDANCE", "PARAMS", "DEFAULT", "CLASSES"}};
  for (const v1::ModelInfo& m : response.models()) {
    const std::string colour = m.channels() == 1   ? "gray"
                               : m.channels() == 3 ? "RGB"
                                                   : absl::StrCat(m.channels(), "ch");
    std::string classes = "-";
    if (m.num_classes() > 0) {
      classes = m.class_names().empty()
                    ? absl::StrCat(m.num_classes())
                    : absl::StrCat(m.num_classes(), ": ", absl::StrJoin(m.class_names(), ", "));
    }
    rows.push_back({m.name(), m.conditioning(),
                    absl::StrCat(m.image_size(), "x", m.image_size(), " ", colour),
                    absl::StrCat(m.steps()), Fixed(m.default_guidance_scale(), 2),
                    HumanCount(m.parameters()), m.is_default() ? "*" : "", classes});
  }
  PrintTable(rows);
  for (const v1::ModelInfo& m : response.models()) {
    if (m.example_prompts().empty()) continue;
    std::cout << "\nExample prompts for " << m.name() << ":\n";
    for (const std::string& p : m.example_prompts()) std::cout << "  " << p << "\n";
  }
  return 0;
}

int Info(v1::ImageGenerator::Stub& stub, const dc::ConnectionOptions& connection) {
  grpc::ClientContext context;
  dc::PrepareContext(connection, UnaryTimeout(), &context);
  v1::GetServerInfoResponse info;
  const grpc::Status status = stub.GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
  if (!status.ok()) return Fail(status);
  PrintTable({{"server", connection.server},
              {"version", info.version()},
              {"uptime", absl::StrCat(Fixed(info.uptime_seconds(), 1), " s")},
              {"requests", absl::StrCat(info.requests_waiting(), " waiting, ",
                                        info.requests_running(), " running")},
              {"draining", info.draining() ? "yes" : "no"}});
  return 0;
}

int Cancel(v1::ImageGenerator::Stub& stub, const dc::ConnectionOptions& connection,
           const std::string& id) {
  grpc::ClientContext context;
  dc::PrepareContext(connection, UnaryTimeout(), &context);
  v1::CancelGenerationRequest request;
  request.set_request_id(id);
  v1::CancelGenerationResponse response;
  const grpc::Status status = stub.CancelGeneration(&context, request, &response);
  if (!status.ok()) return Fail(status);
  std::cout << "cancelled " << id << "\n";
  return 0;
}

int Health(const std::shared_ptr<grpc::Channel>& channel, const dc::ConnectionOptions& connection) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  dc::PrepareContext(connection, UnaryTimeout(), &context);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status =
      stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  if (!status.ok()) return Fail(status);
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()) << "\n";
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  const std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::cerr << kUsage;
    return 1;
  }
  const std::string command = args[1];
  const size_t expected_args = command == "cancel" ? 3 : 2;
  if (args.size() != expected_args) {
    std::cerr << (command == "cancel" ? "dartserve-client: cancel takes one request id\n"
                                      : "dartserve-client: unexpected arguments\n")
              << kUsage;
    return 1;
  }

  const dc::ConnectionOptions connection = dc::ConnectionFromFlags();
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = dc::CreateChannel(connection);
  if (!channel.ok()) return Fail(channel.status().message());
  auto stub = v1::ImageGenerator::NewStub(*channel);

  if (command == "generate") return Generate(*stub, connection);
  if (command == "models") return Models(*stub, connection);
  if (command == "info") return Info(*stub, connection);
  if (command == "cancel") return Cancel(*stub, connection, args[2]);
  if (command == "health") return Health(*channel, connection);
  std::cerr << "dartserve-client: unknown command '" << command << "'\n" << kUsage;
  return 1;
}
