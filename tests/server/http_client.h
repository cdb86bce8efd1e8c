// A minimal HTTP/1.1 client over a plain socket for the HTTP front end's tests: it sends one
// request per connection and reads the response incrementally (status and headers, then body
// lines as they arrive, chunked or not), so tests can watch a stream while the server is held
// mid-generation, and drop the connection whenever they like. Every read is bounded (kBound).
#ifndef DARTSERVE_TESTS_SERVER_HTTP_CLIENT_H_
#define DARTSERVE_TESTS_SERVER_HTTP_CLIENT_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace dartserve::server {

class HttpClient {
 public:
  // Connects to 127.0.0.1:`port`; connected() says whether it worked.
  explicit HttpClient(int port);
  ~HttpClient() { Close(); }
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  // Sends `method path` with `body` (Content-Length set when non-empty) and `headers` ("Name:
  // value") and "Connection: close".
  bool Send(const std::string& method, const std::string& path, const std::string& body = "",
            const std::vector<std::string>& headers = {});
  // Reads the status line and headers; returns the status (0 on a broken response).
  int ReadHead();
  // A response header (name in lower case); empty when absent.
  std::string header(const std::string& lower_name) const;
  // The body's next line, without its '\n'; nullopt once the body has ended.
  std::optional<std::string> ReadLine();
  // The rest of the body.
  std::string ReadBody();
  void Close();

 private:
  bool Fill();      // more raw bytes; false at the end of the connection
  bool FillBody();  // more decoded body bytes; false at the end of the body

  int fd_ = -1;
  std::string raw_;   // received, not yet decoded
  std::string body_;  // decoded, not yet returned
  std::map<std::string, std::string> headers_;
  bool chunked_ = false;
  long long remaining_ = -1;  // Content-Length still to come; -1: none given
  bool body_done_ = false;
};

struct HttpResult {
  int status = 0;
  std::string content_type;
  std::string body;
};

// One request on a fresh connection, read to its end.
HttpResult HttpRequest(int port, const std::string& method, const std::string& path,
                       const std::string& body = "", const std::vector<std::string>& headers = {});

}  // namespace dartserve::server

#endif  // DARTSERVE_TESTS_SERVER_HTTP_CLIENT_H_
