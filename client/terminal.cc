#include "client/terminal.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_io.h"

ABSL_FLAG(std::string, server, "localhost:50051", "Server address, host:port.");
ABSL_FLAG(std::string, token, "", "Bearer token, sent as 'authorization: Bearer <token>'.");
ABSL_FLAG(std::string, tls_ca, "", "PEM root certificate(s): use TLS. Empty: plaintext.");
ABSL_FLAG(int, max_message_mb, 64, "Largest response message accepted (MiB).");

namespace dartserve::client {
namespace {

struct Rgb {
  uint8_t r, g, b;
};

// Channels beyond the first three (alpha) are ignored; one or two channels are gray (+ alpha).
Rgb PixelAt(const Pixels& image, int x, int y) {
  const uint8_t* p = &image.data[(static_cast<size_t>(y) * image.width + x) * image.channels];
  if (image.channels >= 3) return {p[0], p[1], p[2]};
  return {p[0], p[0], p[0]};
}

void AppendRgb(std::string& out, Rgb c) { absl::StrAppend(&out, c.r, ";", c.g, ";", c.b); }

}  // namespace

Pixels ResizePixels(const Pixels& image, int width, int height) {
  Pixels out;
  out.width = std::max(width, 1);
  out.height = std::max(height, 1);
  out.channels = image.channels;
  out.data.resize(static_cast<size_t>(out.width) * out.height * out.channels);
  if (image.width <= 0 || image.height <= 0 || image.channels <= 0) return out;
  // Source span [lo, hi) covered by destination index i of n over a source of length len;
  // never empty, so enlarging picks the nearest source pixel.
  auto span = [](int i, int n, int len) {
    int lo = static_cast<int>(static_cast<int64_t>(i) * len / n);
    int hi = static_cast<int>(static_cast<int64_t>(i + 1) * len / n);
    return std::pair<int, int>{lo, std::max(hi, lo + 1)};
  };
  const int c = image.channels;
  for (int y = 0; y < out.height; ++y) {
    const auto [y0, y1] = span(y, out.height, image.height);
    for (int x = 0; x < out.width; ++x) {
      const auto [x0, x1] = span(x, out.width, image.width);
      const int count = (y1 - y0) * (x1 - x0);
      for (int k = 0; k < c; ++k) {
        int sum = 0;
        for (int sy = y0; sy < y1; ++sy) {
          for (int sx = x0; sx < x1; ++sx) {
            sum += image.data[(static_cast<size_t>(sy) * image.width + sx) * c + k];
          }
        }
        out.data[(static_cast<size_t>(y) * out.width + x) * c + k] =
            static_cast<uint8_t>((sum + count / 2) / count);
      }
    }
  }
  return out;
}

Size FitSize(int width, int height, int max_width, int max_height, bool upscale) {
  width = std::max(width, 1);
  height = std::max(height, 1);
  max_width = std::max(max_width, 1);
  max_height = std::max(max_height, 1);
  if (width <= max_width && height <= max_height) {
    if (!upscale) return {width, height};
    const int factor = std::min(max_width / width, max_height / height);
    return {width * factor, height * factor};
  }
  // Compare width/max_width with height/max_height without rounding.
  if (static_cast<int64_t>(width) * max_height >= static_cast<int64_t>(height) * max_width) {
    const int h = static_cast<int>(static_cast<int64_t>(height) * max_width / width);
    return {max_width, std::max(h, 1)};
  }
  const int w = static_cast<int>(static_cast<int64_t>(width) * max_height / height);
  return {std::max(w, 1), max_height};
}

std::string RenderHalfBlocks(const Pixels& image, int max_columns, int max_pixel_rows) {
  if (image.width <= 0 || image.height <= 0 || image.channels <= 0 ||
      image.data.size() < static_cast<size_t>(image.width) * image.height * image.channels) {
    return "";
  }
  const Size fit = FitSize(image.width, image.height, max_columns, max_pixel_rows);
  Pixels resized;
  const Pixels* src = &image;
  if (fit.width != image.width || fit.height != image.height) {
    resized = ResizePixels(image, fit.width, fit.height);
    src = &resized;
  }
  std::string out;
  for (int y = 0; y < src->height; y += 2) {
    for (int x = 0; x < src->width; ++x) {
      out += "\x1b[38;2;";
      AppendRgb(out, PixelAt(*src, x, y));
      if (y + 1 < src->height) {
        out += ";48;2;";
        AppendRgb(out, PixelAt(*src, x, y + 1));
      } else {
        out += ";49";
      }
      out += "m\u2580";
    }
    out += "\x1b[0m\n";
  }
  return out;
}

std::string FormatProgressLine(int image_index, int num_images, int step, int total_steps,
                               double elapsed_seconds, int bar_width) {
  bar_width = std::max(bar_width, 0);
  int filled = 0;
  if (total_steps > 0) {
    filled = static_cast<int>(static_cast<int64_t>(std::clamp(step, 0, total_steps)) * bar_width /
                              total_steps);
  }
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%.2fs", elapsed_seconds);
  return absl::StrCat("image ", image_index + 1, "/", num_images, " step ", step, "/", total_steps,
                      " [", std::string(filled, '#'), std::string(bar_width - filled, '-'), "] ",
                      seconds);
}

bool StdoutIsTerminal() { return isatty(STDOUT_FILENO) == 1; }

Size TerminalSize() {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
    return {ws.ws_col, ws.ws_row};
  }
  return {80, 24};
}

std::string CursorUp(int n) { return n > 0 ? absl::StrCat("\x1b[", n, "A") : ""; }

std::string LiveArea::Erase() const { return lines_ > 0 ? CursorUp(lines_) + "\x1b[J" : ""; }

std::string LiveArea::Update(absl::string_view block) {
  std::string out = Erase();
  block_ = std::string(block);
  lines_ = static_cast<int>(std::count(block_.begin(), block_.end(), '\n'));
  out += block_;
  return out;
}

std::string LiveArea::Log(absl::string_view line) {
  return absl::StrCat(Erase(), line, "\n", block_);
}

void LiveArea::Release() {
  block_.clear();
  lines_ = 0;
}

ConnectionOptions ConnectionFromFlags() {
  return {.server = absl::GetFlag(FLAGS_server),
          .token = absl::GetFlag(FLAGS_token),
          .tls_ca_path = absl::GetFlag(FLAGS_tls_ca),
          .max_message_mb = absl::GetFlag(FLAGS_max_message_mb)};
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateChannel(const ConnectionOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls_ca_path.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    absl::StatusOr<std::string> pem = ReadFile(options.tls_ca_path);
    if (!pem.ok()) return pem.status();
    if (pem->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(options.tls_ca_path, " is empty"));
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *std::move(pem);
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  const int64_t max_bytes = std::clamp<int64_t>(static_cast<int64_t>(options.max_message_mb) << 20,
                                                1, std::numeric_limits<int>::max());
  args.SetMaxReceiveMessageSize(static_cast<int>(max_bytes));
  return grpc::CreateCustomChannel(options.server, credentials, args);
}

void PrepareContext(const ConnectionOptions& options, double timeout_seconds,
                    grpc::ClientContext* context) {
  if (!options.token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", options.token));
  }
  if (timeout_seconds > 0) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              std::chrono::duration<double>(timeout_seconds)));
  }
}

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return absl::StrCat("CODE_", static_cast<int>(code));
  }
}

std::string FormatStatus(const grpc::Status& status) {
  std::string name = StatusCodeName(status.error_code());
  if (status.error_message().empty()) return name;
  return absl::StrCat(name, ": ", status.error_message());
}

absl::StatusOr<v1::Priority> ParsePriority(absl::string_view name) {
  if (name == "interactive") return v1::PRIORITY_INTERACTIVE;
  if (name == "normal") return v1::PRIORITY_NORMAL;
  if (name == "batch") return v1::PRIORITY_BATCH;
  if (name == "unspecified") return v1::PRIORITY_UNSPECIFIED;
  return absl::InvalidArgumentError(
      absl::StrCat("priority: '", name, "' is not one of interactive, normal, batch"));
}

absl::StatusOr<v1::PreviewKind> ParsePreviewKind(absl::string_view name) {
  if (name == "linear") return v1::PREVIEW_KIND_LINEAR;
  if (name == "decoded") return v1::PREVIEW_KIND_DECODED;
  if (name == "unspecified") return v1::PREVIEW_KIND_UNSPECIFIED;
  return absl::InvalidArgumentError(
      absl::StrCat("preview_kind: '", name, "' is not one of linear, decoded"));
}

std::string SafeFileStem(absl::string_view request_id) {
  if (request_id.empty()) return "request";
  std::string stem(request_id);
  for (char& c : stem) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != ':' &&
        c != '-') {
      c = '_';
    }
  }
  // "." and ".." alone would still be safe inside a longer file name, but keep stems obviously
  // plain.
  if (stem.find_first_not_of('.') == std::string::npos) stem = std::string(stem.size(), '_');
  return stem;
}

std::string PreviewPath(absl::string_view dir, absl::string_view request_id, int image, int step) {
  return absl::StrCat(dir, "/", SafeFileStem(request_id), "_img", image, "_step", step, ".png");
}

std::string ResultPath(absl::string_view dir, absl::string_view request_id, int image) {
  return absl::StrCat(dir, "/", SafeFileStem(request_id), "_img", image, ".png");
}

namespace {

// Bounds the expansion of a range such as "class:0-99999999".
constexpr int64_t kMaxMixValues = 1 << 16;

// Parses "v" or "a-b" (a <= b) into `out`, expanding the range.
template <typename Int>
absl::Status ParseIntValue(absl::string_view key, absl::string_view text, std::vector<Int>& out) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("mix: ", key, ": '", text, "' is not an integer or a range a-b"));
  };
  Int lo, hi;
  // Search for '-' after the first character so that a lone negative number parses as one.
  const size_t dash = text.size() > 1 ? text.find('-', 1) : absl::string_view::npos;
  if (dash == absl::string_view::npos) {
    if (!absl::SimpleAtoi(text, &lo)) return bad();
    hi = lo;
  } else {
    if (!absl::SimpleAtoi(text.substr(0, dash), &lo) ||
        !absl::SimpleAtoi(text.substr(dash + 1), &hi)) {
      return bad();
    }
    if (hi < lo) {
      return absl::InvalidArgumentError(
          absl::StrCat("mix: ", key, ": range '", text, "' is reversed"));
    }
  }
  if (static_cast<int64_t>(out.size()) + (static_cast<int64_t>(hi) - lo) + 1 > kMaxMixValues) {
    return absl::InvalidArgumentError(
        absl::StrCat("mix: ", key, ": more than ", kMaxMixValues, " values"));
  }
  for (int64_t v = lo; v <= static_cast<int64_t>(hi); ++v) out.push_back(static_cast<Int>(v));
  return absl::OkStatus();
}

template <typename T>
const T& Pick(const std::vector<T>& values, std::mt19937_64& rng) {
  std::uniform_int_distribution<size_t> index(0, values.size() - 1);
  return values[index(rng)];
}

}  // namespace

namespace {

// Appends one value `v` of `key` to `mix`.
absl::Status ParseMixValue(absl::string_view key, absl::string_view v, LoadMix& mix) {
  if (key == "class") return ParseIntValue(key, v, mix.classes);
  if (key == "preview_every") return ParseIntValue(key, v, mix.preview_every);
  if (key == "n") return ParseIntValue(key, v, mix.num_images);
  if (key == "guidance") {
    float g;
    if (!absl::SimpleAtof(v, &g)) {
      return absl::InvalidArgumentError(absl::StrCat("mix: guidance: '", v, "' is not a number"));
    }
    mix.guidance.push_back(g);
    return absl::OkStatus();
  }
  if (key == "priority") {
    absl::StatusOr<v1::Priority> p = ParsePriority(v);
    if (!p.ok()) return absl::InvalidArgumentError(absl::StrCat("mix: ", p.status().message()));
    mix.priorities.push_back(*p);
    return absl::OkStatus();
  }
  if (key == "preview_kind") {
    absl::StatusOr<v1::PreviewKind> k = ParsePreviewKind(v);
    if (!k.ok()) return absl::InvalidArgumentError(absl::StrCat("mix: ", k.status().message()));
    mix.preview_kinds.push_back(*k);
    return absl::OkStatus();
  }
  if (key == "model") {
    mix.models.emplace_back(v);
    return absl::OkStatus();
  }
  if (key == "kind") {
    for (const CallKind kind : kAllCallKinds) {
      if (v == CallKindName(kind)) {
        mix.kinds.push_back(kind);
        return absl::OkStatus();
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat("mix: kind: '", v,
                     "' is not one of normal, client_cancel, cancel_rpc, short_deadline, abandon"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "mix: unknown key '", key,
      "' (keys: class, guidance, preview_every, preview_kind, n, priority, model, kind)"));
}

}  // namespace

absl::StatusOr<LoadMix> ParseLoadMix(absl::string_view text) {
  LoadMix mix;
  std::vector<std::string> seen;
  for (absl::string_view entry : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    entry = absl::StripAsciiWhitespace(entry);
    const size_t colon = entry.find(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("mix: '", entry, "' is not key:value|value|..."));
    }
    const absl::string_view key = absl::StripAsciiWhitespace(entry.substr(0, colon));
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      return absl::InvalidArgumentError(absl::StrCat("mix: key '", key, "' is repeated"));
    }
    seen.emplace_back(key);
    // Every value is checked for emptiness before any is parsed, so "class:a||1" reports the
    // empty value rather than the bad one.
    std::vector<absl::string_view> values;
    for (absl::string_view v : absl::StrSplit(entry.substr(colon + 1), '|')) {
      v = absl::StripAsciiWhitespace(v);
      if (v.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("mix: ", key, ": empty value"));
      }
      values.push_back(v);
    }
    for (absl::string_view v : values) {
      if (absl::Status status = ParseMixValue(key, v, mix); !status.ok()) return status;
    }
  }
  return mix;
}

v1::GenerateImageRequest SampleRequest(const LoadMix& mix, std::mt19937_64& rng) {
  // Draw in a fixed order so that the same --seed and mix give the same request sequence.
  v1::GenerateImageRequest request;
  request.set_seed(rng());
  if (!mix.classes.empty()) request.set_class_id(Pick(mix.classes, rng));
  if (!mix.guidance.empty()) request.set_guidance_scale(Pick(mix.guidance, rng));
  if (!mix.preview_every.empty()) {
    request.mutable_preview()->set_every_n_steps(Pick(mix.preview_every, rng));
  }
  if (!mix.preview_kinds.empty()) {
    request.mutable_preview()->set_kind(Pick(mix.preview_kinds, rng));
  }
  if (!mix.num_images.empty()) request.set_num_images(Pick(mix.num_images, rng));
  if (!mix.priorities.empty()) request.set_priority(Pick(mix.priorities, rng));
  if (!mix.models.empty()) request.set_model(Pick(mix.models, rng));
  return request;
}

CallKind SampleKind(const LoadMix& mix, std::mt19937_64& rng) {
  return mix.kinds.empty() ? CallKind::kNormal : Pick(mix.kinds, rng);
}

absl::string_view CallKindName(CallKind kind) {
  switch (kind) {
    case CallKind::kNormal:
      return "normal";
    case CallKind::kClientCancel:
      return "client_cancel";
    case CallKind::kCancelRpc:
      return "cancel_rpc";
    case CallKind::kShortDeadline:
      return "short_deadline";
    case CallKind::kAbandon:
      return "abandon";
  }
  return "unknown";
}

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(q * static_cast<double>(sorted.size()));
  const size_t index =
      static_cast<size_t>(std::clamp(rank - 1, 0.0, static_cast<double>(sorted.size() - 1)));
  return sorted[index];
}

}  // namespace dartserve::client
