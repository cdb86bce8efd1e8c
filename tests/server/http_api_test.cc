// The HTTP front end end to end: an in-process Server with its HTTP port on a free port, driven by
// a plain-socket HTTP client, over the gated fake engine (so tests hold a generation mid-run), and
// compared with what gRPC promises: the same stream, the same errors as HTTP statuses, the same
// token, and a vanished client cancels its generation.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/png.h"
#include "nlohmann/json.hpp"
#include "server/server.h"
#include "tests/server/gated_engine.h"
#include "tests/server/http_client.h"

namespace dartserve::server {
namespace {

using nlohmann::json;

struct HttpHarness {
  std::unique_ptr<Server> server;
  GatedEngine* engine = nullptr;  // owned by the server
  int port = 0;
};

struct HttpHarnessOptions {
  std::string auth_token;
  bool open_gate = true;
  std::string tls_cert_pem, tls_key_pem;
};

HttpHarness StartHttp(HttpHarnessOptions opts = {}) {
  HttpHarness h;
  std::unique_ptr<GatedEngine> engine = OpenGatedEngine();
  h.engine = engine.get();
  std::vector<ModelSpec> models;
  models.push_back(FakeSpec("fake", std::move(engine)));
  ServerOptions options;
  options.address = "127.0.0.1:0";
  options.metrics_address = "";
  options.http_address = "127.0.0.1:0";
  options.http_threads = 8;
  options.service.auth_token = opts.auth_token;
  options.tls_cert_pem = opts.tls_cert_pem;
  options.tls_key_pem = opts.tls_key_pem;
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::Start(std::move(options), std::move(models));
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return h;
  h.server = *std::move(server);
  EXPECT_TRUE(h.server->WarmUp().ok());
  if (!opts.open_gate) h.engine->Close();
  h.port = h.server->http_port();
  return h;
}

json Parse(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << text;
  return j;
}

Pixels DecodeBase64Png(const std::string& b64) {
  std::string png;
  EXPECT_TRUE(absl::Base64Unescape(b64, &png));
  absl::StatusOr<Pixels> px = DecodePng(png);
  EXPECT_TRUE(px.ok()) << px.status();
  return px.ok() ? *px : Pixels{};
}

// The value of one sample line of the server's metrics (0 when absent).
double Metric(Server& server, const std::string& series) {
  const std::string exposition = server.metrics().Serialize();
  const size_t at = exposition.find(series + " ");
  return at == std::string::npos ? 0 : std::stod(exposition.substr(at + series.size() + 1));
}

// Polls `done` every few milliseconds for at most kBound: for effects of a closed connection,
// which no event of the server announces.
template <typename Done>
bool Eventually(Done done) {
  const auto until = std::chrono::steady_clock::now() + kBound;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// The stream's lines come as they happen (Accepted while the engine is held), in the gRPC
// stream's order: Accepted, every step's Progress (with previews), the Result, then the end.
TEST(HttpApiTest, StreamsNdjsonEventsAsTheyHappen) {
  HttpHarness h = StartHttp({.open_gate = false});
  ASSERT_NE(h.port, 0);
  HttpClient client(h.port);
  const double sent = absl::ToUnixMicros(absl::Now()) / 1e6;
  ASSERT_TRUE(client.Send("POST", "/v1/images:generate",
                          R"({"requestId": "nd-1", "classId": 3, "seed": "20"})"));
  ASSERT_EQ(client.ReadHead(), 200);
  EXPECT_EQ(client.header("content-type"), "application/x-ndjson");
  // Accepted arrives while no step may run: it was flushed, not buffered.
  std::optional<std::string> line = client.ReadLine();
  ASSERT_TRUE(line.has_value());
  const json accepted = Parse(*line)["accepted"];
  EXPECT_EQ(accepted["requestId"], "nd-1");
  EXPECT_EQ(accepted["seed"], "20");  // uint64 is a string in protobuf's JSON mapping
  EXPECT_EQ(accepted["numImages"], 1);
  EXPECT_EQ(accepted["queuePosition"], 0);

  h.engine->Allow(1);
  line = client.ReadLine();
  ASSERT_TRUE(line.has_value());
  const json first = Parse(*line)["progress"];
  EXPECT_EQ(first["step"], 1);
  EXPECT_EQ(first["totalSteps"], 20);  // FakeEngine: seed 20 takes 20 steps
  EXPECT_EQ(DecodeBase64Png(first["previewPng"]).width, 8);
  // When the step was done, on this host's clock: after the request was sent, before now.
  double step_done = first["stepDoneUnixSeconds"];
  EXPECT_GE(step_done, sent);
  EXPECT_LE(step_done, absl::ToUnixMicros(absl::Now()) / 1e6);

  h.engine->Open();
  int last_step = 1;
  json result;
  while ((line = client.ReadLine()).has_value()) {
    const json event = Parse(*line);
    ASSERT_FALSE(event.contains("error")) << *line;
    if (event.contains("progress")) {
      ASSERT_TRUE(result.is_null()) << "progress after the result";
      EXPECT_EQ(event["progress"]["step"], last_step + 1);
      last_step = event["progress"]["step"];
      EXPECT_GE(event["progress"]["stepDoneUnixSeconds"], step_done) << "steps in time order";
      step_done = event["progress"]["stepDoneUnixSeconds"];
    } else {
      ASSERT_TRUE(event.contains("result")) << *line;
      result = event["result"];
    }
  }
  EXPECT_EQ(last_step, 20);
  ASSERT_FALSE(result.is_null());
  EXPECT_EQ(result["seed"], "20");
  EXPECT_EQ(result["width"], 8);
  const Pixels image = DecodeBase64Png(result["png"]);
  EXPECT_EQ(image.width, 8);
  EXPECT_EQ(image.height, 8);
  EXPECT_EQ(Metric(*h.server, R"(dartserve_requests_total{model="fake",status="ok"})"), 1);
}

// Errors before the first event are an HTTP status and {"code", "message"}, the message naming
// the field; none of these requests reaches the scheduler.
TEST(HttpApiTest, BadRequestsAreHttpErrorsNamingTheField) {
  HttpHarness h = StartHttp({.open_gate = false});
  const size_t batches_before = h.engine->batches.size();  // the warm-up's
  const auto expect_error = [&](const std::string& body, int status, const std::string& code,
                                const std::string& prefix) {
    const HttpResult r = HttpRequest(h.port, "POST", "/v1/images:generate", body);
    EXPECT_EQ(r.status, status) << body << " -> " << r.body;
    EXPECT_EQ(r.content_type, "application/json");
    const json error = Parse(r.body);
    EXPECT_EQ(error["code"], code) << r.body;
    EXPECT_TRUE(absl::StartsWith(error["message"].get<std::string>(), prefix))
        << body << " -> " << r.body;
  };
  expect_error("this is not json", 400, "INVALID_ARGUMENT", "body: not valid JSON");
  expect_error("[1, 2]", 400, "INVALID_ARGUMENT", "body: must be a JSON object");
  expect_error(R"({"bogus": 1})", 400, "INVALID_ARGUMENT", "bogus: unknown field");
  expect_error(R"({"preview": {"bogus": 1}})", 400, "INVALID_ARGUMENT",
               "preview.bogus: unknown field");
  expect_error(R"({"numImages": "many"})", 400, "INVALID_ARGUMENT", "num_images: invalid value");
  expect_error(R"({"classId": 1, "prompt": "one"})", 400, "INVALID_ARGUMENT", "prompt:");
  expect_error(R"({"numImages": 17})", 400, "INVALID_ARGUMENT", "num_images:");
  expect_error(R"({"guidanceScale": 99})", 400, "INVALID_ARGUMENT", "guidance_scale:");
  expect_error(R"({"prompt": "not a class"})", 400, "INVALID_ARGUMENT", "prompt:");
  expect_error(R"({"requestId": "no spaces"})", 400, "INVALID_ARGUMENT", "request_id:");
  expect_error(R"({"model": "nope"})", 404, "NOT_FOUND", "model: unknown model 'nope'");
  // The body limit is gRPC's (--max_request_kb, 1 MiB by default).
  expect_error(absl::StrCat(R"({"prompt": ")", std::string(2 << 20, 'x'), R"("})"), 400,
               "INVALID_ARGUMENT", "body: larger than the limit");

  EXPECT_EQ(HttpRequest(h.port, "GET", "/v1/images:generate").status, 405);
  EXPECT_EQ(HttpRequest(h.port, "GET", "/v1/nothing").status, 404);
  EXPECT_EQ(h.engine->batches.size(), batches_before);  // nothing was stepped
  EXPECT_EQ(h.server->model(0).dispatcher.stats().queued, 0);
}

// Cancelling a running call by id: the stream, already started, ends with an error line; an id
// that is not in flight is 404; an id in flight is taken (409).
TEST(HttpApiTest, CancelEndsAStartedStreamWithAnErrorLine) {
  HttpHarness h = StartHttp({.open_gate = false});
  HttpClient client(h.port);
  ASSERT_TRUE(
      client.Send("POST", "/v1/images:generate", R"({"requestId": "c-1", "numImages": 2})"));
  ASSERT_EQ(client.ReadHead(), 200);
  ASSERT_TRUE(client.ReadLine().has_value());  // Accepted

  const HttpResult duplicate =
      HttpRequest(h.port, "POST", "/v1/images:generate", R"({"requestId": "c-1"})");
  EXPECT_EQ(duplicate.status, 409);
  EXPECT_EQ(Parse(duplicate.body)["code"], "ALREADY_EXISTS");

  const HttpResult cancelled = HttpRequest(h.port, "POST", "/v1/requests/c-1:cancel");
  EXPECT_EQ(cancelled.status, 200);
  EXPECT_EQ(Parse(cancelled.body), json::object());
  std::optional<std::string> line, last;
  while ((line = client.ReadLine()).has_value()) last = line;
  ASSERT_TRUE(last.has_value());
  const json error = Parse(*last)["error"];
  EXPECT_EQ(error["code"], "CANCELLED");
  EXPECT_TRUE(absl::StrContains(error["message"].get<std::string>(), "CancelGeneration"));

  const HttpResult unknown = HttpRequest(h.port, "POST", "/v1/requests/c-1:cancel");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_TRUE(absl::StartsWith(Parse(unknown.body)["message"].get<std::string>(), "request_id:"));
  EXPECT_EQ(HttpRequest(h.port, "POST", "/v1/requests/bad%20id:cancel").status, 400);
  h.engine->Open();  // the cancelled images' held step ends; the server can stop
}

// X-Server-Timeout is the call's deadline, as a gRPC deadline is: the stream, already started,
// ends with DEADLINE_EXCEEDED at the first step boundary after it; a bad value is a 400.
TEST(HttpApiTest, TimeoutHeaderIsTheCallsDeadline) {
  HttpHarness h = StartHttp({.open_gate = false});
  const HttpResult bad =
      HttpRequest(h.port, "POST", "/v1/images:generate", "{}", {"X-Server-Timeout: soon"});
  EXPECT_EQ(bad.status, 400);
  EXPECT_TRUE(absl::StartsWith(Parse(bad.body)["message"].get<std::string>(),
                               "X-Server-Timeout: must be a positive number of seconds"))
      << bad.body;
  EXPECT_EQ(
      HttpRequest(h.port, "POST", "/v1/images:generate", "{}", {"X-Server-Timeout: -1"}).status,
      400);

  HttpClient client(h.port);
  const absl::Time deadline = absl::Now() + absl::Milliseconds(200);
  ASSERT_TRUE(
      client.Send("POST", "/v1/images:generate", R"({"numImages": 2})", {"X-Server-Timeout: 0.2"}));
  ASSERT_EQ(client.ReadHead(), 200);
  ASSERT_TRUE(client.ReadLine().has_value());  // Accepted
  h.engine->WaitEntered(1);                    // the first step runs (held at the gate)
  absl::SleepFor(deadline - absl::Now() + absl::Milliseconds(50));  // let the deadline pass
  h.engine->Allow(1);
  std::optional<std::string> line, last;
  while ((line = client.ReadLine()).has_value()) last = line;
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(Parse(*last)["error"]["code"], "DEADLINE_EXCEEDED") << *last;
  h.engine->Open();
}

TEST(HttpApiTest, ModelsAndInfoMirrorTheProto) {
  HttpHarness h = StartHttp();
  const HttpResult models = HttpRequest(h.port, "GET", "/v1/models");
  ASSERT_EQ(models.status, 200);
  const json list = Parse(models.body)["models"];
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["name"], "fake");
  EXPECT_EQ(list[0]["classNames"][3], "three");
  EXPECT_EQ(list[0]["imageSize"], 8);
  EXPECT_EQ(list[0]["isDefault"], true);

  const HttpResult info = HttpRequest(h.port, "GET", "/v1/info");
  ASSERT_EQ(info.status, 200);
  const json server = Parse(info.body);
  EXPECT_EQ(server["requestsWaiting"], 0);
  EXPECT_EQ(server["requestsRunning"], 0);
  EXPECT_EQ(server["draining"], false);
  EXPECT_EQ(HttpRequest(h.port, "POST", "/v1/info").status, 405);
}

// The same bearer token as gRPC on every API path; the page itself is open (it asks for the
// token), and a wrong token learns nothing about its body.
TEST(HttpApiTest, BearerTokenAsForGrpc) {
  HttpHarness h = StartHttp({.auth_token = "s3cret"});
  const std::vector<std::string> right = {"Authorization: Bearer s3cret"};
  const std::vector<std::string> wrong = {"Authorization: Bearer nope"};
  for (const auto& [method, path] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "/v1/models"},
                                                        {"GET", "/v1/info"},
                                                        {"POST", "/v1/images:generate"},
                                                        {"POST", "/v1/requests/x:cancel"},
                                                        {"POST", "/v1/images/generations"}}) {
    const HttpResult none = HttpRequest(h.port, method, path, "not json");
    EXPECT_EQ(none.status, 401) << path;
    EXPECT_EQ(HttpRequest(h.port, method, path, "not json", wrong).status, 401) << path;
  }
  EXPECT_EQ(Parse(HttpRequest(h.port, "GET", "/v1/info").body)["message"],
            "authorization: a bearer token is required");
  EXPECT_EQ(HttpRequest(h.port, "GET", "/v1/models", "", right).status, 200);
  const HttpResult generated =
      HttpRequest(h.port, "POST", "/v1/images:generate", R"({"classId": 1})", right);
  EXPECT_EQ(generated.status, 200);
  EXPECT_TRUE(absl::StrContains(generated.body, R"("result")"));
  EXPECT_EQ(HttpRequest(h.port, "GET", "/").status, 200);
}

// A client that closes its connection cancels its generation, as a gRPC client does: while
// events flow (a write fails) and while it waits with nothing to send (the socket is watched).
TEST(HttpApiTest, DisconnectCancelsTheGeneration) {
  HttpHarness h = StartHttp({.open_gate = false});
  const std::string cancelled = R"(dartserve_requests_total{model="fake",status="cancelled"})";
  {
    HttpClient client(h.port);
    ASSERT_TRUE(client.Send("POST", "/v1/images:generate", R"({"requestId": "d-1"})"));
    ASSERT_EQ(client.ReadHead(), 200);
    ASSERT_TRUE(client.ReadLine().has_value());  // Accepted; the step is held
    h.engine->WaitEntered(1);
  }  // closed while the call waits for its next event
  EXPECT_TRUE(Eventually([&] { return Metric(*h.server, cancelled) == 1; }));
  // The id is free again: a retry is accepted.
  h.engine->Open();
  const HttpResult retry =
      HttpRequest(h.port, "POST", "/v1/images:generate", R"({"requestId": "d-1", "seed": 30})");
  EXPECT_EQ(retry.status, 200);
  EXPECT_TRUE(absl::StrContains(retry.body, R"("result")"));

  {
    HttpClient client(h.port);
    // 90 steps with a preview each: the client leaves while they stream.
    ASSERT_TRUE(client.Send("POST", "/v1/images:generate", R"({"requestId": "d-2", "seed": 90})"));
    ASSERT_EQ(client.ReadHead(), 200);
    ASSERT_TRUE(client.ReadLine().has_value());
  }
  EXPECT_TRUE(Eventually([&] { return Metric(*h.server, cancelled) == 2; }));
  EXPECT_TRUE(Eventually([&] { return h.server->model(0).dispatcher.stats().active == 0; }));
}

// TLS as for gRPC: the same certificate and key serve HTTPS (checked with curl).
TEST(HttpApiTest, ServesHttpsWithTheGrpcCertificate) {
  if (std::system("command -v openssl >/dev/null && command -v curl >/dev/null") != 0) {
    GTEST_SKIP() << "openssl or curl is not installed";
  }
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / absl::StrCat("dartserve-http-tls-", getpid());
  std::filesystem::create_directories(dir);
  const std::string key = (dir / "key.pem").string(), cert = (dir / "cert.pem").string();
  ASSERT_EQ(std::system(absl::StrCat("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "
                                     "/CN=localhost -addext subjectAltName=DNS:localhost -keyout ",
                                     key, " -out ", cert, " 2>/dev/null")
                            .c_str()),
            0);
  const auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  HttpHarness h = StartHttp({.tls_cert_pem = read(cert), .tls_key_pem = read(key)});
  ASSERT_NE(h.port, 0);
  const std::string command = absl::StrCat("curl -sS --max-time 30 --cacert ", cert,
                                           " https://localhost:", h.port, "/v1/models");
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) out.append(buffer, n);
  EXPECT_EQ(pclose(pipe), 0);
  EXPECT_EQ(Parse(out)["models"][0]["name"], "fake") << out;
  // Plain HTTP on the TLS port gets no API answer.
  EXPECT_NE(HttpRequest(h.port, "GET", "/v1/models").status, 200);
  std::filesystem::remove_all(dir);
}

// The page and its files are served from the binary.
TEST(HttpApiTest, ServesThePage) {
  HttpHarness h = StartHttp();
  const HttpResult page = HttpRequest(h.port, "GET", "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_EQ(page.content_type, "text/html; charset=utf-8");
  EXPECT_TRUE(absl::StrContains(page.body, "<title>dartserve"));
  EXPECT_EQ(HttpRequest(h.port, "GET", "/app.js").content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(HttpRequest(h.port, "GET", "/style.css").status, 200);
}

}  // namespace
}  // namespace dartserve::server
