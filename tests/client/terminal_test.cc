#include "client/terminal.h"

#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/fake_server.h"

namespace dartserve::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

Pixels Gray(int width, int height, std::vector<uint8_t> data) {
  return {.width = width, .height = height, .channels = 1, .data = std::move(data)};
}

Pixels Rgb(int width, int height, std::vector<uint8_t> data) {
  return {.width = width, .height = height, .channels = 3, .data = std::move(data)};
}

TEST(RenderHalfBlocksTest, GrayTwoByTwoIsOneLineOfTwoCells) {
  // Upper row 0 255, lower row 128 64: foreground = upper pixel, background = lower pixel.
  const std::string out = RenderHalfBlocks(Gray(2, 2, {0, 255, 128, 64}), 80, 48);
  EXPECT_EQ(out,
            "\x1b[38;2;0;0;0;48;2;128;128;128m\u2580"
            "\x1b[38;2;255;255;255;48;2;64;64;64m\u2580"
            "\x1b[0m\n");
}

TEST(RenderHalfBlocksTest, RgbTwoByTwo) {
  const std::string out = RenderHalfBlocks(Rgb(2, 2,
                                               {255, 0, 0, 0, 255, 0,     // red, green
                                                0, 0, 255, 10, 20, 30}),  // blue, (10,20,30)
                                           80, 48);
  EXPECT_EQ(out,
            "\x1b[38;2;255;0;0;48;2;0;0;255m\u2580"
            "\x1b[38;2;0;255;0;48;2;10;20;30m\u2580"
            "\x1b[0m\n");
}

TEST(RenderHalfBlocksTest, OddHeightLeavesLastLowerHalfDefault) {
  const std::string out = RenderHalfBlocks(Gray(2, 3, {1, 2, 3, 4, 5, 6}), 80, 48);
  EXPECT_EQ(out,
            "\x1b[38;2;1;1;1;48;2;3;3;3m\u2580\x1b[38;2;2;2;2;48;2;4;4;4m\u2580\x1b[0m\n"
            "\x1b[38;2;5;5;5;49m\u2580\x1b[38;2;6;6;6;49m\u2580\x1b[0m\n");
}

TEST(RenderHalfBlocksTest, SingleRowImage) {
  EXPECT_EQ(RenderHalfBlocks(Rgb(1, 1, {7, 8, 9}), 80, 48), "\x1b[38;2;7;8;9;49m\u2580\x1b[0m\n");
}

TEST(RenderHalfBlocksTest, ShrinksWithBoxFilterToFit) {
  // 4x4 of four 2x2 blocks with means 10, 20, 30 and 41 (40, 41, 41, 42 rounds to 41).
  const Pixels image = Gray(4, 4,
                            {
                                10, 10, 20, 20,  //
                                10, 10, 20, 20,  //
                                30, 30, 40, 41,  //
                                30, 30, 41, 42,  //
                            });
  EXPECT_EQ(RenderHalfBlocks(image, 2, 2),
            "\x1b[38;2;10;10;10;48;2;30;30;30m\u2580\x1b[38;2;20;20;20;48;2;41;41;41m\u2580"
            "\x1b[0m\n");
  // The tighter bound wins: 3 columns x 2 pixel rows still gives 2 x 2.
  EXPECT_EQ(RenderHalfBlocks(image, 3, 2), RenderHalfBlocks(image, 2, 2));
}

TEST(RenderHalfBlocksTest, NeverEnlarges) {
  const Pixels image = Gray(2, 2, {0, 255, 128, 64});
  EXPECT_EQ(RenderHalfBlocks(image, 100, 100), RenderHalfBlocks(image, 2, 2));
}

TEST(RenderHalfBlocksTest, EmptyOrShortImageRendersNothing) {
  EXPECT_EQ(RenderHalfBlocks(Pixels{}, 80, 48), "");
  EXPECT_EQ(RenderHalfBlocks(Gray(2, 2, {1, 2, 3}), 80, 48), "");
}

TEST(FitSizeTest, KeepsSmallImagesUnlessUpscaling) {
  EXPECT_EQ(FitSize(28, 28, 80, 40), (Size{28, 28}));
  EXPECT_EQ(FitSize(28, 28, 80, 60, /*upscale=*/true), (Size{56, 56}));
  EXPECT_EQ(FitSize(28, 28, 80, 84, /*upscale=*/true), (Size{56, 56}));  // width bounds it
  EXPECT_EQ(FitSize(28, 28, 27, 84, /*upscale=*/true), (Size{27, 27}));
}

TEST(FitSizeTest, ShrinksKeepingAspectRatio) {
  EXPECT_EQ(FitSize(100, 50, 20, 20), (Size{20, 10}));
  EXPECT_EQ(FitSize(50, 100, 20, 20), (Size{10, 20}));
  EXPECT_EQ(FitSize(1000, 1, 10, 10), (Size{10, 1}));
}

TEST(ResizePixelsTest, EnlargingIsNearestNeighbour) {
  const Pixels out = ResizePixels(Gray(2, 1, {5, 9}), 4, 2);
  EXPECT_EQ(out.width, 4);
  EXPECT_EQ(out.height, 2);
  EXPECT_THAT(out.data, ElementsAre(5, 5, 9, 9, 5, 5, 9, 9));
}

TEST(ResizePixelsTest, KeepsChannels) {
  const Pixels out = ResizePixels(Rgb(2, 1, {0, 100, 200, 10, 110, 210}), 1, 1);
  EXPECT_EQ(out.channels, 3);
  EXPECT_THAT(out.data, ElementsAre(5, 105, 205));
}

TEST(ProgressLineTest, Format) {
  EXPECT_EQ(FormatProgressLine(0, 2, 3, 8, 0.42), "image 1/2 step 3/8 [###-----] 0.42s");
  EXPECT_EQ(FormatProgressLine(1, 2, 8, 8, 1.5), "image 2/2 step 8/8 [########] 1.50s");
  EXPECT_EQ(FormatProgressLine(0, 1, 1, 4, 0, 4), "image 1/1 step 1/4 [#---] 0.00s");
  EXPECT_EQ(FormatProgressLine(0, 1, 0, 0, 0), "image 1/1 step 0/0 [--------] 0.00s");
}

TEST(LiveAreaTest, RedrawsInPlace) {
  LiveArea area;
  EXPECT_EQ(area.Update("a\nb\n"), "a\nb\n");
  // Up two lines, erase to the end of the screen, draw the new block.
  EXPECT_EQ(area.Update("c\n"), "\x1b[2A\x1b[Jc\n");
  // A log line goes above the block, which is redrawn under it.
  EXPECT_EQ(area.Log("saved x.png"), "\x1b[1A\x1b[Jsaved x.png\nc\n");
  EXPECT_EQ(area.Update("d\ne\n"), "\x1b[1A\x1b[Jd\ne\n");
  area.Release();
  EXPECT_EQ(area.Update("f\n"), "f\n");
  EXPECT_EQ(area.Log("x"), "\x1b[1A\x1b[Jx\nf\n");
}

TEST(LiveAreaTest, LogWithoutBlockIsAPlainLine) {
  LiveArea area;
  EXPECT_EQ(area.Log("hello"), "hello\n");
}

TEST(CursorUpTest, Sequence) {
  EXPECT_EQ(CursorUp(3), "\x1b[3A");
  EXPECT_EQ(CursorUp(0), "");
}

TEST(StatusTest, CodeNamesAndFormatting) {
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::INVALID_ARGUMENT), "INVALID_ARGUMENT");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
  EXPECT_EQ(StatusCodeName(static_cast<grpc::StatusCode>(99)), "CODE_99");
  EXPECT_EQ(FormatStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                      "guidance_scale: must be in [0, 20]")),
            "INVALID_ARGUMENT: guidance_scale: must be in [0, 20]");
  EXPECT_EQ(FormatStatus(grpc::Status::CANCELLED), "CANCELLED");
}

// A self-signed CA certificate (its key was thrown away): a valid root to trust that no server
// here presents.
constexpr char kTestCaPem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBnjCCAUOgAwIBAgIUB5rYVj3mi5v+uM0wyudWnunrO5IwCgYIKoZIzj0EAwIw\n"
    "IzEhMB8GA1UEAwwYZGFydHNlcnZlIGNsaWVudCB0ZXN0IENBMCAXDTI2MTIwMjA0\n"
    "MDM0NFoYDzIxMjYxMTA4MDQwMzQ0WjAjMSEwHwYDVQQDDBhkYXJ0c2VydmUgY2xp\n"
    "ZW50IHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARntcgrdv/gRXRV\n"
    "Wf2VsT2v6Zt7OQTfxI0V5tHUjc9Mrkf1bjnm8lWUuDV+u1vhnrYu8G32GSF3SS3e\n"
    "8K/rbOX3o1MwUTAdBgNVHQ4EFgQUwg7ZT78xERa1TbqQBMCbGVeNpqswHwYDVR0j\n"
    "BBgwFoAUwg7ZT78xERa1TbqQBMCbGVeNpqswDwYDVR0TAQH/BAUwAwEB/zAKBggq\n"
    "hkjOPQQDAgNJADBGAiEAjJ3BZoVXWhTTIqKSN8FACk/b+8NB5bHMli9o9xhkVU0C\n"
    "IQD8slItv1DveysbigWzcDMxF/qYXR+vkeBOJUQHlb/0uA==\n"
    "-----END CERTIFICATE-----\n";

// A file under the test's temporary folder holding `contents`.
std::string TempFile(const std::string& name, const std::string& contents) {
  const std::string path = ::testing::TempDir() + "/" + name;
  EXPECT_TRUE(WriteFileAtomically(path, contents).ok()) << path;
  return path;
}

// ListModels over `channel`, with `options`' token and a 10 s deadline.
grpc::Status ListModels(const std::shared_ptr<grpc::Channel>& channel,
                        const ConnectionOptions& options, v1::ListModelsResponse* response) {
  grpc::ClientContext context;
  PrepareContext(options, 10, &context);
  return v1::ImageGenerator::NewStub(channel)->ListModels(&context, v1::ListModelsRequest(),
                                                          response);
}

TEST(ConnectionTest, MissingCaFileIsNotFoundNamingThePath) {
  ConnectionOptions options;
  options.tls_ca_path = "/nonexistent/ca.pem";
  const absl::Status status = CreateChannel(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("/nonexistent/ca.pem"));
}

TEST(ConnectionTest, EmptyCaFileIsInvalidArgumentNamingThePath) {
  ConnectionOptions options;
  options.tls_ca_path = TempFile("empty-ca.pem", "");
  const absl::Status status = CreateChannel(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr(options.tls_ca_path));
}

TEST(ConnectionTest, ChannelIsCreatedLazily) {
  // Nothing listens on port 1: creating the channel must neither fail nor start connecting.
  ConnectionOptions options;
  options.server = "127.0.0.1:1";
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = CreateChannel(options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  ASSERT_NE(*channel, nullptr);
  EXPECT_EQ((*channel)->GetState(/*try_to_connect=*/false), GRPC_CHANNEL_IDLE);
}

TEST(ConnectionTest, EmptyCaPathIsPlaintextAndSendsTheToken) {
  FakeImageGenerator service;
  service.models.add_models()->set_name("m");
  InProcessServer server(&service, /*health=*/false);
  ASSERT_TRUE(server.ok());
  ConnectionOptions options;
  options.server = server.address();
  options.token = "secret";
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = CreateChannel(options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  v1::ListModelsResponse response;
  const grpc::Status status = ListModels(*channel, options, &response);
  ASSERT_TRUE(status.ok()) << FormatStatus(status);
  ASSERT_EQ(response.models_size(), 1);
  EXPECT_EQ(response.models(0).name(), "m");
  EXPECT_EQ(service.last_authorization(), "Bearer secret");
}

TEST(ConnectionTest, CaFileMeansTlsWhichAPlaintextServerRefuses) {
  FakeImageGenerator service;
  InProcessServer server(&service, /*health=*/false);
  ASSERT_TRUE(server.ok());
  ConnectionOptions options;
  options.server = server.address();
  // The channel is TLS, and its handshake with the plaintext server fails, so the call never
  // reaches the service.
  options.tls_ca_path = TempFile("ca.pem", kTestCaPem);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = CreateChannel(options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  v1::ListModelsResponse response;
  EXPECT_EQ(ListModels(*channel, options, &response).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(service.last_authorization(), "");
}

TEST(ConnectionTest, MaxMessageSizeBoundsResponses) {
  // A ListModels response of a little over 1 MiB.
  FakeImageGenerator service;
  service.models.add_models()->set_name(std::string((1 << 20) + 100, 'x'));
  InProcessServer server(&service, /*health=*/false);
  ASSERT_TRUE(server.ok());
  ConnectionOptions options;
  options.server = server.address();
  v1::ListModelsResponse response;
  options.max_message_mb = 1;
  EXPECT_EQ(ListModels(*CreateChannel(options), options, &response).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  options.max_message_mb = 2;
  const grpc::Status status = ListModels(*CreateChannel(options), options, &response);
  EXPECT_TRUE(status.ok()) << FormatStatus(status);
}

TEST(ConnectionTest, PrepareContextSetsTheDeadlineOnlyWhenAsked) {
  ConnectionOptions options;
  grpc::ClientContext without;
  PrepareContext(options, 0, &without);
  EXPECT_EQ(without.deadline(), std::chrono::system_clock::time_point::max());
  grpc::ClientContext with;
  const auto before = std::chrono::system_clock::now();
  PrepareContext(options, 30, &with);
  EXPECT_GE(with.deadline(), before + std::chrono::seconds(30));
  EXPECT_LE(with.deadline(), std::chrono::system_clock::now() + std::chrono::seconds(30));
}

TEST(RequestTest, Priority) {
  EXPECT_EQ(*ParsePriority("interactive"), v1::PRIORITY_INTERACTIVE);
  EXPECT_EQ(*ParsePriority("normal"), v1::PRIORITY_NORMAL);
  EXPECT_EQ(*ParsePriority("batch"), v1::PRIORITY_BATCH);
  EXPECT_EQ(ParsePriority("urgent").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RequestTest, PreviewKind) {
  EXPECT_EQ(*ParsePreviewKind("linear"), v1::PREVIEW_KIND_LINEAR);
  EXPECT_EQ(*ParsePreviewKind("decoded"), v1::PREVIEW_KIND_DECODED);
  EXPECT_EQ(ParsePreviewKind("sharp").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RequestTest, OutputPathsAreConfinedToTheFolder) {
  EXPECT_EQ(PreviewPath("out", "req-1", 0, 3), "out/req-1_img0_step3.png");
  EXPECT_EQ(ResultPath("out", "req-1", 1), "out/req-1_img1.png");
  EXPECT_EQ(SafeFileStem("../../etc/passwd"), ".._.._etc_passwd");
  EXPECT_EQ(SafeFileStem(".."), "__");
  EXPECT_EQ(SafeFileStem(""), "request");
  EXPECT_EQ(SafeFileStem("a:b.c_d-e"), "a:b.c_d-e");
}

TEST(LoadMixTest, ParsesEveryKey) {
  absl::StatusOr<LoadMix> mix = ParseLoadMix(
      "class:0-2|7, guidance:1|2.5,preview_every:0|1,n:1-2,priority:interactive|batch,"
      "model:a|b,preview_kind:linear|decoded,kind:normal|client_cancel|cancel_rpc|short_deadline|"
      "abandon");
  ASSERT_TRUE(mix.ok()) << mix.status();
  EXPECT_THAT(mix->classes, ElementsAre(0, 1, 2, 7));
  EXPECT_THAT(mix->guidance, ElementsAre(1.0f, 2.5f));
  EXPECT_THAT(mix->preview_every, ElementsAre(0u, 1u));
  EXPECT_THAT(mix->num_images, ElementsAre(1u, 2u));
  EXPECT_THAT(mix->priorities, ElementsAre(v1::PRIORITY_INTERACTIVE, v1::PRIORITY_BATCH));
  EXPECT_THAT(mix->models, ElementsAre("a", "b"));
  EXPECT_THAT(mix->preview_kinds, ElementsAre(v1::PREVIEW_KIND_LINEAR, v1::PREVIEW_KIND_DECODED));
  EXPECT_THAT(mix->kinds,
              ElementsAre(CallKind::kNormal, CallKind::kClientCancel, CallKind::kCancelRpc,
                          CallKind::kShortDeadline, CallKind::kAbandon));
  for (const CallKind kind : kAllCallKinds) {
    EXPECT_EQ(ParseLoadMix(absl::StrCat("kind:", CallKindName(kind)))->kinds,
              std::vector<CallKind>{kind});
  }
}

TEST(LoadMixTest, KindsAreDrawnApartFromRequests) {
  absl::StatusOr<LoadMix> mix = ParseLoadMix("kind:client_cancel|abandon");
  ASSERT_TRUE(mix.ok());
  std::mt19937_64 rng(3);
  int abandon = 0;
  for (int i = 0; i < 1000; ++i) abandon += SampleKind(*mix, rng) == CallKind::kAbandon;
  EXPECT_NEAR(abandon, 500, 80);
  // Without kinds every call is normal, and nothing is drawn.
  std::mt19937_64 a(9), b(9);
  EXPECT_EQ(SampleKind(LoadMix(), a), CallKind::kNormal);
  EXPECT_EQ(a(), b());
}

TEST(LoadMixTest, EmptyMixSetsNothing) {
  absl::StatusOr<LoadMix> mix = ParseLoadMix("");
  ASSERT_TRUE(mix.ok());
  std::mt19937_64 rng(1);
  const v1::GenerateImageRequest request = SampleRequest(*mix, rng);
  EXPECT_TRUE(request.has_seed());
  EXPECT_EQ(request.condition_case(), v1::GenerateImageRequest::CONDITION_NOT_SET);
  EXPECT_FALSE(request.has_guidance_scale());
  EXPECT_FALSE(request.has_preview());
  EXPECT_TRUE(request.model().empty());
}

TEST(LoadMixTest, RejectsBadInput) {
  for (const char* text : {"class", "class:", "class:a", "class:5-3", "colour:red", "n:-1",
                           "guidance:x", "priority:urgent", "preview_kind:sharp", "class:1,class:2",
                           "class:1||2", "class:0-100000000", "kind:sometimes"}) {
    absl::StatusOr<LoadMix> mix = ParseLoadMix(text);
    EXPECT_EQ(mix.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
  EXPECT_THAT(std::string(ParseLoadMix("colour:red").status().message()), HasSubstr("colour"));
}

TEST(LoadMixTest, SamplesUniformlyAndReproducibly) {
  absl::StatusOr<LoadMix> mix = ParseLoadMix("class:0-9,guidance:1|2");
  ASSERT_TRUE(mix.ok());
  std::mt19937_64 rng(42);
  std::vector<int> counts(10);
  int guided = 0;
  constexpr int kDraws = 10000;
  for (int i = 0; i < kDraws; ++i) {
    const v1::GenerateImageRequest request = SampleRequest(*mix, rng);
    ASSERT_EQ(request.condition_case(), v1::GenerateImageRequest::kClassId);
    ASSERT_GE(request.class_id(), 0);
    ASSERT_LE(request.class_id(), 9);
    ++counts[request.class_id()];
    guided += request.guidance_scale() == 2.0f;
  }
  for (int c : counts) EXPECT_NEAR(c, kDraws / 10, 150);
  EXPECT_NEAR(guided, kDraws / 2, 300);

  std::mt19937_64 a(7), b(7);
  EXPECT_EQ(SampleRequest(*mix, a).SerializeAsString(), SampleRequest(*mix, b).SerializeAsString());
}

TEST(PercentileTest, NearestRank) {
  const std::vector<double> v = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(Percentile(v, 0.5), 5);
  EXPECT_EQ(Percentile(v, 0.9), 9);
  EXPECT_EQ(Percentile(v, 0.95), 10);
  EXPECT_EQ(Percentile(v, 0.99), 10);
  EXPECT_EQ(Percentile(v, 1.0), 10);
  EXPECT_EQ(Percentile({3.5}, 0.5), 3.5);
  EXPECT_EQ(Percentile({}, 0.5), 0);
}

}  // namespace
}  // namespace dartserve::client
