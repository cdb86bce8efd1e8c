// The one place where absl::Status becomes grpc::Status (docs/service.md, "Errors"). The canonical
// codes have the same numbers in both; the message is kept as is (it names the field or the
// reason) up to kMaxStatusMessageBytes. Messages quote client values shortened
// (QuoteClientValue, validation.h); the cap is the backstop that keeps any message, percent-
// encoded into the grpc-message trailer, far below a client's 8 KiB metadata limit.
#ifndef DARTSERVE_SERVER_GRPC_STATUS_H_
#define DARTSERVE_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <cctype>
#include <string>
#include <utility>

#include "absl/status/status.h"

namespace dartserve::server {

inline constexpr size_t kMaxStatusMessageBytes = 1024;

// `status`'s message cut to kMaxStatusMessageBytes (at a UTF-8 character boundary, then "..."),
// as every front end (gRPC, HTTP) reports it.
inline std::string CappedStatusMessage(const absl::Status& status) {
  std::string message(status.message());
  if (message.size() > kMaxStatusMessageBytes) {
    size_t cut = kMaxStatusMessageBytes;
    while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xC0) == 0x80) --cut;
    message.resize(cut);
    message += "...";
  }
  return message;
}

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), CappedStatusMessage(status));
}

// Lower-case code name for metric labels ("ok", "invalid_argument", ...).
inline std::string StatusLabel(absl::StatusCode code) {
  std::string name = absl::StatusCodeToString(code);
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_GRPC_STATUS_H_
