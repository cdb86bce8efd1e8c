// Server::Start against ports it cannot have: one held by another process, one another server
// listens on (with and without --reuse_port).
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dartserve/v1/image_generator.grpc.pb.h"
#include "server/server.h"
#include "tests/server/gated_engine.h"

namespace dartserve::server {
namespace {

// A TCP socket listening on `ip`:0 (an ephemeral port), as a process that is not a gRPC server
// would hold it; closed on destruction.
class HeldPort {
 public:
  explicit HeldPort(const char* ip) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address = {};
    address.sin_family = AF_INET;
    inet_pton(AF_INET, ip, &address.sin_addr);
    socklen_t size = sizeof(address);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&address), size) != 0 ||
        listen(fd_, 1) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
      ADD_FAILURE() << "cannot hold a port on " << ip;
      return;
    }
    port_ = ntohs(address.sin_port);
  }
  ~HeldPort() {
    if (fd_ >= 0) close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

absl::StatusOr<std::unique_ptr<Server>> StartFakeServer(ServerOptions options) {
  std::vector<ModelSpec> models;
  models.push_back(FakeSpec("fake", OpenGatedEngine()));
  return Server::Start(std::move(options), std::move(models));
}

// A port held by another process: Start fails with a message that says so (and the half-built
// server is torn down without crashing).
TEST(ServerTest, BusyPortIsAClearError) {
  HeldPort held("0.0.0.0");
  ASSERT_GT(held.port(), 0);
  const std::string address = absl::StrCat("0.0.0.0:", held.port());
  absl::StatusOr<std::unique_ptr<Server>> server =
      StartFakeServer({.address = address, .metrics_address = ""});
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(server.status().message(),
            absl::StrCat("cannot listen on ", address, ": address in use"));
}

// gRPC would let a second server bind the same port (SO_REUSEPORT) and the kernel would split
// connections between the two; dartserve refuses that unless asked.
TEST(ServerTest, SecondServerOnAPortIsRefused) {
  absl::StatusOr<std::unique_ptr<Server>> first =
      StartFakeServer({.address = "127.0.0.1:0", .metrics_address = ""});
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string address = absl::StrCat("127.0.0.1:", (*first)->port());
  absl::StatusOr<std::unique_ptr<Server>> second =
      StartFakeServer({.address = address, .metrics_address = ""});
  ASSERT_FALSE(second.ok()) << "two servers share " << address;
  EXPECT_EQ(second.status().message(),
            absl::StrCat("cannot listen on ", address, ": address in use"));

  // Servers that all opt in share a port, and both answer.
  absl::StatusOr<std::unique_ptr<Server>> shared_a =
      StartFakeServer({.address = "127.0.0.1:0", .reuse_port = true, .metrics_address = ""});
  ASSERT_TRUE(shared_a.ok()) << shared_a.status();
  const std::string shared = absl::StrCat("127.0.0.1:", (*shared_a)->port());
  absl::StatusOr<std::unique_ptr<Server>> shared_b =
      StartFakeServer({.address = shared, .reuse_port = true, .metrics_address = ""});
  ASSERT_TRUE(shared_b.ok()) << shared_b.status();
  EXPECT_EQ((*shared_b)->port(), (*shared_a)->port());
  auto stub =
      v1::ImageGenerator::NewStub(grpc::CreateChannel(shared, grpc::InsecureChannelCredentials()));
  BoundedContext ctx;
  v1::ListModelsResponse response;
  EXPECT_TRUE(stub->ListModels(&ctx, v1::ListModelsRequest(), &response).ok());
  // One that does not opt in is still refused.
  EXPECT_FALSE(StartFakeServer({.address = shared, .metrics_address = ""}).ok());
}

}  // namespace
}  // namespace dartserve::server
