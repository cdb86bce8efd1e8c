// civetweb's HTTPS on Debian 12 (civetweb 1.15, OpenSSL 3): the two shim objects of server/tls/,
// embedded in the server at build time, loaded from memory before civetweb loads OpenSSL.
#ifndef DARTSERVE_SERVER_TLS_SHIMS_H_
#define DARTSERVE_SERVER_TLS_SHIMS_H_

#include "absl/status/status.h"

namespace dartserve::server {

// Loads the shims (once per process; later calls return the first result) so that civetweb's
// dlopen("libssl.so") and dlopen("libcrypto.so") get OpenSSL 3 with the names civetweb asks for.
// INTERNAL with the loader's message when they cannot be loaded. Thread-safe.
absl::Status LoadTlsShims();

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_TLS_SHIMS_H_
