// POST /v1/images/generations: OpenAI's Images API shape over the service (server/openai_images.h),
// end to end over HTTP against the gated fake engine, plus the request translation alone.
#include "server/openai_images.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/png.h"
#include "nlohmann/json.hpp"
#include "server/server.h"
#include "tests/server/gated_engine.h"
#include "tests/server/http_client.h"

namespace dartserve::server {
namespace {

using nlohmann::json;

// A server over the gated fake engine (4 steps of 8x8 images); `engine` (optional) lets the test
// hold steps, the gate closed after warm-up.
std::unique_ptr<Server> StartServer(GatedEngine** engine = nullptr) {
  std::unique_ptr<GatedEngine> gated = OpenGatedEngine();
  GatedEngine* gate = gated.get();
  std::vector<ModelSpec> models;
  models.push_back(FakeSpec("fake", std::move(gated)));
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(
      {.address = "127.0.0.1:0", .metrics_address = "", .http_address = "127.0.0.1:0"},
      std::move(models));
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  EXPECT_TRUE((*server)->WarmUp().ok());
  if (engine != nullptr) {
    gate->Close();
    *engine = gate;
  }
  return *std::move(server);
}

int PngWidth(const std::string& b64) {
  std::string png;
  EXPECT_TRUE(absl::Base64Unescape(b64, &png));
  absl::StatusOr<Pixels> px = DecodePng(png);
  EXPECT_TRUE(px.ok()) << px.status();
  return px.ok() ? px->width : 0;
}

// A class model takes a class name as the prompt; b64_json images of the model's size come back
// in one JSON response.
TEST(OpenAiImagesTest, ReturnsB64JsonImages) {
  std::unique_ptr<Server> server = StartServer();
  ASSERT_NE(server, nullptr);
  const HttpResult r = HttpRequest(server->http_port(), "POST", "/v1/images/generations",
                                   R"({"model": "fake", "prompt": "three", "n": 2, "size": "8x8",
                                       "response_format": "b64_json", "seed": 5})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "application/json");
  const json body = json::parse(r.body);
  EXPECT_GT(body["created"].get<int64_t>(), 0);
  ASSERT_EQ(body["data"].size(), 2u);
  for (const json& image : body["data"]) EXPECT_EQ(PngWidth(image["b64_json"]), 8);
  EXPECT_NE(body["data"][0]["b64_json"], body["data"][1]["b64_json"]);  // seeds 5 and 6
}

// stream: server-sent events; partial_images previews before the completed event. Steps are let
// through one at a time, so no preview is replaced by a newer one before it is sent.
TEST(OpenAiImagesTest, StreamsPartialAndCompletedEvents) {
  GatedEngine* engine = nullptr;
  std::unique_ptr<Server> server = StartServer(&engine);
  ASSERT_NE(server, nullptr);
  HttpClient client(server->http_port());
  ASSERT_TRUE(client.Send("POST", "/v1/images/generations",
                          R"({"prompt": "seven", "stream": true, "partial_images": 2})"));
  ASSERT_EQ(client.ReadHead(), 200);
  EXPECT_EQ(client.header("content-type"), "text/event-stream");
  // The next event's type and data.
  const auto next_event = [&]() -> std::pair<std::string, json> {
    std::string type;
    while (std::optional<std::string> line = client.ReadLine()) {
      if (absl::StartsWith(*line, "event: ")) type = line->substr(7);
      if (absl::StartsWith(*line, "data: ")) return {type, json::parse(line->substr(6))};
    }
    return {"", json()};
  };
  // The fake model takes 4 steps: two previews (every 4 / 3 = 1 step), then the final image.
  for (int i = 0; i < 2; ++i) {
    engine->Allow(1);
    const auto [type, data] = next_event();
    ASSERT_EQ(type, "image_generation.partial_image");
    EXPECT_EQ(data["type"], type);
    EXPECT_EQ(data["partial_image_index"], i);
    EXPECT_EQ(data["image_index"], 0);
    EXPECT_EQ(data["size"], "8x8");
    EXPECT_EQ(PngWidth(data["b64_json"]), 8);
  }
  engine->Open();
  const auto [type, data] = next_event();
  ASSERT_EQ(type, "image_generation.completed");
  EXPECT_EQ(PngWidth(data["b64_json"]), 8);
  EXPECT_TRUE(data.contains("usage"));
  EXPECT_EQ(next_event().first, "");  // the stream ends after the last image
}

// What does not map is a 400 naming the OpenAI field, in OpenAI's error shape.
TEST(OpenAiImagesTest, WhatDoesNotMapIsA400NamingTheField) {
  std::unique_ptr<Server> server = StartServer();
  ASSERT_NE(server, nullptr);
  const auto expect_param = [&](const std::string& body, int status, const std::string& param) {
    const HttpResult r = HttpRequest(server->http_port(), "POST", "/v1/images/generations", body);
    EXPECT_EQ(r.status, status) << body << " -> " << r.body;
    const json error = json::parse(r.body)["error"];
    EXPECT_EQ(error["param"], param) << r.body;
    EXPECT_TRUE(absl::StartsWith(error["message"].get<std::string>(), param + ":")) << r.body;
    EXPECT_EQ(error["type"], "invalid_request_error");
  };
  expect_param(R"({"prompt": "one", "size": "1024x1024"})", 400, "size");
  expect_param(R"({"prompt": "one", "response_format": "url"})", 400, "response_format");
  expect_param(R"({"prompt": "one", "background": "transparent"})", 400, "background");
  expect_param(R"({"prompt": "one", "style": "vivid"})", 400, "style");
  expect_param(R"({"prompt": "one", "n": 17})", 400, "n");
  expect_param(R"({"prompt": "one", "n": "two"})", 400, "n");
  expect_param(R"({"prompt": "a cat"})", 400, "prompt");
  expect_param(R"({"prompt": "one", "stream": true, "partial_images": 9})", 400, "partial_images");
  expect_param(R"({"model": "dall-e-3", "prompt": "one"})", 404, "model");
  expect_param("{", 400, "body");
}

TEST(OpenAiImagesTest, TranslatesTheRequest) {
  v1::ListModelsResponse models;
  v1::ModelInfo* m = models.add_models();
  m->set_name("m");
  m->set_image_size(32);
  m->set_progress_steps(16);
  m->set_is_default(true);
  absl::StatusOr<OpenAiImagesRequest> r = ParseOpenAiImagesRequest(
      R"({"prompt": "red ring", "n": 3, "size": "auto", "stream": true, "partial_images": 3,
          "seed": 7, "guidance_scale": 2.5, "user": "u", "quality": null})",
      models);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->request.prompt(), "red ring");
  EXPECT_EQ(r->request.num_images(), 3u);
  EXPECT_EQ(r->request.seed(), 7u);
  EXPECT_FLOAT_EQ(r->request.guidance_scale(), 2.5f);
  EXPECT_EQ(r->size, "32x32");
  EXPECT_EQ(r->request.preview().every_n_steps(), 4u);  // 3 previews spread over 16 steps
  // Not streamed: no previews at all.
  r = ParseOpenAiImagesRequest(R"({"prompt": "x"})", models);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->request.has_preview());
  EXPECT_EQ(r->request.preview().every_n_steps(), 0u);
}

}  // namespace
}  // namespace dartserve::server
