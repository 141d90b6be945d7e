#pragma once

// A keep-alive HTTP(S) client over one libcurl easy handle: the transport of the
// OpenSearch sink. Basic auth and a CA file come from the options, never from text
// that could reach a log.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

namespace pgderive {

struct HttpResponse {
  long status = 0;
  std::string body;
};

class HttpClient {
 public:
  struct Options {
    std::string url;  // http(s)://[user:password@]host:port, credentials taken out
    std::string ca_file;
    std::chrono::milliseconds timeout = std::chrono::seconds(30);
  };

  static Result<HttpClient> Create(const Options& options);

  // `path` starts with '/'. A transport failure (refused, reset, timeout) is transient;
  // any HTTP status is returned to the caller to judge.
  Result<HttpResponse> Send(std::string_view method, std::string_view path,
                            std::string_view body = {},
                            std::string_view content_type = "application/json");

  const std::string& redacted_url() const { return redacted_url_; }

  HttpClient(HttpClient&&) noexcept;
  HttpClient& operator=(HttpClient&&) noexcept;
  ~HttpClient();

 private:
  struct State;
  explicit HttpClient(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
  std::string redacted_url_;
};

}  // namespace pgderive
