// Code shared by the command-line clients (dartserve-client, dartserve-loadgen):
//
//   * terminal output: images as 24-bit-colour ANSI half-blocks, a progress line, and a live
//     area that is redrawn in place;
//   * the gRPC plumbing both binaries need: channel creation (insecure or TLS), bearer-token
//     metadata, status-code names;
//   * request building: priority names, safe output file names, and the load generator's
//     request mix.
//
// Everything here is a pure function or a small value type with no global state, so it is
// unit-tested without a terminal (tests/client/terminal_test.cc; the connection functions
// against an in-process server).
#ifndef DARTSERVE_CLIENT_TERMINAL_H_
#define DARTSERVE_CLIENT_TERMINAL_H_

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/pixels.h"
#include "dartserve/v1/image_generator.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace dartserve::client {

// ---------------------------------------------------------------------------------------------
// Terminal rendering
// ---------------------------------------------------------------------------------------------

// Resizes `image` to `width` x `height` (both >= 1). Each output pixel is the mean of the source
// pixels its area covers (a box filter), which degenerates to nearest-neighbour when enlarging.
// Keeps the channel count.
Pixels ResizePixels(const Pixels& image, int width, int height);

struct Size {
  int width = 0;
  int height = 0;
  friend bool operator==(const Size&, const Size&) = default;
};

// The largest size with the aspect ratio of `width` x `height` that fits in `max_width` x
// `max_height` (each at least 1 pixel). Never enlarges unless `upscale`; when it does, it
// enlarges by a whole factor so that pixels stay square and crisp.
Size FitSize(int width, int height, int max_width, int max_height, bool upscale = false);

// Renders `image` as lines of "▀" (U+2580 UPPER HALF BLOCK): one character per pixel column and
// two pixel rows per line, the upper pixel as the foreground colour and the lower one as the
// background colour. Each cell is written as one SGR sequence followed by the glyph:
//
//   ESC[38;2;R;G;B;48;2;R;G;Bm▀          (upper pixel; lower pixel)
//
// and each line ends with ESC[0m (reset) and '\n'. With an odd number of pixel rows the last
// line has no lower pixel, so its cells are ESC[38;2;R;G;B;49m▀ (49: default background).
// Gray images (1 channel) use R = G = B. The image is first shrunk with FitSize/ResizePixels
// (box filter, never enlarged) to at most `max_columns` characters wide and `max_pixel_rows`
// pixel rows (that is, ceil(max_pixel_rows / 2) lines). Empty string for an empty image.
std::string RenderHalfBlocks(const Pixels& image, int max_columns, int max_pixel_rows);

// One progress line, e.g. "image 1/2 step 3/8 [###-----] 0.42s". `image_index` is 0-based (it
// is printed 1-based, like the step); the bar has `bar_width` cells, floor(step * bar_width /
// total_steps) of them '#'. No escape sequences, no newline.
std::string FormatProgressLine(int image_index, int num_images, int step, int total_steps,
                               double elapsed_seconds, int bar_width = 8);

// Whether standard output is a terminal (isatty). Live previews are drawn only then; a pipe or
// a file gets plain lines.
bool StdoutIsTerminal();

// The terminal's size in character cells, or 80 x 24 when stdout is not a terminal or the size
// is unknown.
Size TerminalSize();

// ESC[<n>A: moves the cursor up `n` lines, keeping its column ("" for n <= 0).
std::string CursorUp(int n);

// A block of lines at the bottom of the output that is redrawn in place (the live preview and
// its progress line), with ordinary log lines printed above it.
//
// Redrawing works by moving back to the start of the block and erasing to the end of the
// screen before writing the new block:
//
//   ESC[<n>A   cursor up n lines, where n is the number of lines the previous block printed
//              (the cursor sits in column 0 after the block's final '\n')
//   ESC[J      erase from the cursor to the end of the screen, so a shorter block leaves no
//              stale lines behind
//
// The methods return the bytes to write; the caller writes them to stdout in order. Not
// thread-safe.
class LiveArea {
 public:
  // Replaces the block with `block` (text whose lines each end in '\n').
  std::string Update(absl::string_view block);
  // Prints `line` (no trailing newline needed) above the block and redraws the block under it.
  std::string Log(absl::string_view line);
  // Keeps the current block on screen as ordinary output; the next Update starts a new block.
  void Release();

 private:
  std::string Erase() const;

  std::string block_;
  int lines_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

struct ConnectionOptions {
  // host:port of the dartserve server.
  std::string server = "localhost:50051";
  // Bearer token; non-empty: every call carries "authorization: Bearer <token>" metadata.
  std::string token;
  // PEM file with the root certificate(s) to trust; non-empty: TLS, empty: plaintext.
  std::string tls_ca_path;
  // Largest message the client accepts (result PNGs of large images can exceed gRPC's 4 MiB
  // default).
  int max_message_mb = 64;
};

// The options from the flags both binaries share: --server, --token, --tls_ca, --max_message_mb
// (defined once, in terminal.cc).
ConnectionOptions ConnectionFromFlags();

// Creates a channel to `options.server`: plaintext when `options.tls_ca_path` is empty, TLS
// trusting that file's certificates otherwise. Connecting is lazy (the channel starts IDLE), so
// this never fails because the server is down; it fails only over the CA file: NOT_FOUND (naming
// the path) when it cannot be opened, DATA_LOSS on a read error, INVALID_ARGUMENT (naming the
// path) when it is empty. A CA file that is not valid PEM is not detected here: calls on the
// channel then fail with UNAVAILABLE.
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateChannel(const ConnectionOptions& options);

// Adds the per-call settings to a fresh `context`: the bearer token as metadata (plain metadata
// rather than call credentials, because gRPC refuses to send call credentials over a plaintext
// channel and a token over plaintext is still useful behind a TLS-terminating proxy) and, when
// `timeout_seconds` > 0, a deadline that far from now.
void PrepareContext(const ConnectionOptions& options, double timeout_seconds,
                    grpc::ClientContext* context);

// The canonical upper-case name of a status code, e.g. "INVALID_ARGUMENT"; "CODE_<n>" for a
// number gRPC does not define.
std::string StatusCodeName(grpc::StatusCode code);

// "CODE: message", or just "CODE" when the message is empty.
std::string FormatStatus(const grpc::Status& status);

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

// "interactive", "normal", "batch" (and "unspecified") to the enum; INVALID_ARGUMENT otherwise.
absl::StatusOr<v1::Priority> ParsePriority(absl::string_view name);
// "linear", "decoded" (and "unspecified") to the enum; INVALID_ARGUMENT otherwise.
absl::StatusOr<v1::PreviewKind> ParsePreviewKind(absl::string_view name);

// `request_id` with every character outside [A-Za-z0-9._:-] replaced by '_', and "request" when
// empty, so that an id echoed by the server can never name a path outside the output folder.
std::string SafeFileStem(absl::string_view request_id);
// <dir>/<id>_img<image>_step<step>.png and <dir>/<id>_img<image>.png (image and step as sent on
// the wire: 0-based image index, 1-based step).
std::string PreviewPath(absl::string_view dir, absl::string_view request_id, int image, int step);
std::string ResultPath(absl::string_view dir, absl::string_view request_id, int image);

// How the load generator treats a call, besides sending it (the mix's `kind` key; what each
// does and which outcomes it expects: client/loadgen.h):
//   normal          reads the stream to its end
//   client_cancel   cancels its own call mid-stream
//   cancel_rpc      ends its call mid-stream with a CancelGeneration call
//   short_deadline  has a deadline shorter than a generation
//   abandon         stops reading mid-stream, then drops the stream
enum class CallKind { kNormal, kClientCancel, kCancelRpc, kShortDeadline, kAbandon };
inline constexpr CallKind kAllCallKinds[] = {CallKind::kNormal, CallKind::kClientCancel,
                                             CallKind::kCancelRpc, CallKind::kShortDeadline,
                                             CallKind::kAbandon};
// "normal", "client_cancel", ... as above.
absl::string_view CallKindName(CallKind kind);

// The load generator's request mix. Syntax: comma-separated `key:values` entries, with the
// values of one key separated by '|'; integer keys also take inclusive ranges "a-b". Each
// request picks, for every key independently, one of the listed values uniformly at random
// (a range counts as all its values, so "class:0-8|9" is uniform over 0..9). Keys:
//
//   class          class_id (integers, ranges)          e.g. class:0-9
//   guidance       guidance_scale (numbers)             e.g. guidance:1|2
//   preview_every  preview.every_n_steps (ints, ranges) e.g. preview_every:0|1
//   preview_kind   linear|decoded                       e.g. preview_kind:linear|decoded
//   n              num_images (ints, ranges)            e.g. n:1-4
//   priority       interactive|normal|batch             e.g. priority:interactive|batch
//   model          model name                           e.g. model:fmnist-dart
//   kind           CallKind names (not a request field) e.g. kind:normal|client_cancel
//
// An absent key leaves the field unset (the server's default; for kind: normal). The empty
// string is a valid mix that sets nothing. A repeated key, an unknown key, an empty value list,
// a bad number or a reversed range is INVALID_ARGUMENT.
struct LoadMix {
  std::vector<int32_t> classes;
  std::vector<float> guidance;
  std::vector<uint32_t> preview_every;
  std::vector<v1::PreviewKind> preview_kinds;
  std::vector<uint32_t> num_images;
  std::vector<v1::Priority> priorities;
  std::vector<std::string> models;
  std::vector<CallKind> kinds;
};
absl::StatusOr<LoadMix> ParseLoadMix(absl::string_view text);

// Draws one request from `mix`, with a seed from `rng` so that a run is reproducible from the
// load generator's --seed. Leaves request_id empty (the server picks one). Does not draw a kind
// (SampleKind does), so the request sequence of a seed is the same whatever the kinds.
v1::GenerateImageRequest SampleRequest(const LoadMix& mix, std::mt19937_64& rng);
// One of `mix.kinds`, uniformly from `rng`; kNormal when it lists none.
CallKind SampleKind(const LoadMix& mix, std::mt19937_64& rng);

// The nearest-rank `q`-quantile (0 < q <= 1) of `sorted` (ascending): the smallest value with at
// least a fraction q of the values at or below it. 0 for an empty vector.
double Percentile(const std::vector<double>& sorted, double q);

}  // namespace dartserve::client

#endif  // DARTSERVE_CLIENT_TERMINAL_H_
