// Reading a Prometheus endpoint as a scraper does: an HTTP GET, and one sample's value out of the
// text exposition format. dartserve-loadgen samples the server's RSS with it; the tests read the
// server's /metrics and a throw-away Prometheus's API with it (tests/testing/prometheus.h).
//
// Torch-free and gRPC-free: HTTP is civetweb's client API (the HTTP library under the server's
// metrics endpoint). Thread-safe: every function may be called from any thread.
#ifndef DARTSERVE_CLIENT_PROMETHEUS_SCRAPE_H_
#define DARTSERVE_CLIENT_PROMETHEUS_SCRAPE_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dartserve::client {

// HTTP GET http://host:port/path_and_query; returns the body. UNAVAILABLE when it cannot
// connect, or gets no complete answer within 10 s; on a status other than 200 an error carrying
// the status code and body (NOT_FOUND for 404, INVALID_ARGUMENT for 400, UNAVAILABLE for 503,
// UNKNOWN otherwise).
absl::StatusOr<std::string> HttpGet(const std::string& host, int port,
                                    const std::string& path_and_query);

// The value of the sample `series` in a text exposition: `series` is a metric name, with its
// labels exactly as the exposition writes them when it has any ("process_open_fds",
// "dartserve_images_total{model=\"fmnist\"}"). nullopt when no line carries it or its value is
// not a number.
std::optional<double> SampleValue(absl::string_view exposition, absl::string_view series);

// GET http://<address>/metrics (`address` is "host:port") and the value of `series` in it.
// INVALID_ARGUMENT for an address without a port, HttpGet's errors, and NOT_FOUND naming the
// series when the exposition lacks it.
absl::StatusOr<double> ScrapeSample(absl::string_view address, absl::string_view series);

}  // namespace dartserve::client

#endif  // DARTSERVE_CLIENT_PROMETHEUS_SCRAPE_H_
