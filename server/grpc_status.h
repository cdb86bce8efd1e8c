// The one place where absl::Status becomes grpc::Status (docs/service.md, "Errors"). The canonical
// codes have the same numbers in both; the message is kept as is (it names the field or the
// reason).
#ifndef DARTSERVE_SERVER_GRPC_STATUS_H_
#define DARTSERVE_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace dartserve::server {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// Lower-case code name for metric labels ("ok", "invalid_argument", ...).
inline std::string StatusLabel(absl::StatusCode code) {
  std::string name = absl::StatusCodeToString(code);
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_GRPC_STATUS_H_
