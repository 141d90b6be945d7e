#include "sinks/opensearch/http_client.h"

#include <curl/curl.h>

#include <mutex>

#include "base/redact.h"
#include "config/url.h"

namespace pgderive {
namespace {

struct CurlDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

size_t AppendBody(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

// curl_global_init is not thread-safe; run it exactly once, before the first handle.
void GlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

struct HttpClient::State {
  std::unique_ptr<CURL, CurlDeleter> curl;
  std::string base;  // scheme://host:port, no credentials
  std::string user;
  std::string password;
  bool has_credentials = false;
  std::string ca_file;
  long timeout_ms = 30000;
  char error[CURL_ERROR_SIZE] = {};
};

HttpClient::HttpClient(std::unique_ptr<State> state) : state_(std::move(state)) {}
HttpClient::HttpClient(HttpClient&&) noexcept = default;
HttpClient& HttpClient::operator=(HttpClient&&) noexcept = default;
HttpClient::~HttpClient() = default;

Result<HttpClient> HttpClient::Create(const Options& options) {
  std::string why;
  auto url = Url::Parse(options.url, &why);
  if (!url) return Error::Permanent("bad URL: " + why);
  if (url->scheme != "http" && url->scheme != "https") {
    return Error::Permanent("bad URL " + url->Redacted() + ": the scheme must be http or https");
  }
  GlobalInitOnce();
  auto state = std::make_unique<State>();
  state->curl.reset(curl_easy_init());
  if (state->curl == nullptr) return Error::Transient("cannot create a curl handle");
  const bool ipv6 = url->host.find(':') != std::string::npos;
  state->base = url->scheme + "://" + (ipv6 ? "[" + url->host + "]" : url->host);
  if (url->port) state->base += ":" + std::to_string(*url->port);
  state->base += url->path == "/" ? "" : url->path;
  state->has_credentials = url->password.has_value() || !url->user.empty();
  state->user = url->user;
  state->password = url->password.value_or("");
  state->ca_file = options.ca_file;
  state->timeout_ms = static_cast<long>(options.timeout.count());
  HttpClient client(std::move(state));
  client.redacted_url_ = url->Redacted();
  return client;
}

Result<HttpResponse> HttpClient::Send(std::string_view method, std::string_view path,
                                      std::string_view body, std::string_view content_type) {
  CURL* curl = state_->curl.get();
  curl_easy_reset(curl);  // keeps the connection cache, clears per-request options
  const std::string url = state_->base + std::string(path);
  const std::string verb(method);
  HttpResponse response;

  std::unique_ptr<curl_slist, SlistDeleter> headers;
  const std::string content_header = "Content-Type: " + std::string(content_type);
  headers.reset(curl_slist_append(nullptr, content_header.c_str()));
  // Without this, libcurl waits for a "100 Continue" before sending large bodies.
  headers.reset(curl_slist_append(headers.release(), "Expect:"));

  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, verb.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, state_->timeout_ms);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, std::min(state_->timeout_ms, 10000L));
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, state_->error);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &AppendBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response.body);
  if (!body.empty() || verb == "POST" || verb == "PUT") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  if (verb == "HEAD") curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  if (state_->has_credentials) {
    curl_easy_setopt(curl, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(curl, CURLOPT_USERNAME, state_->user.c_str());
    curl_easy_setopt(curl, CURLOPT_PASSWORD, state_->password.c_str());
  }
  if (!state_->ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, state_->ca_file.c_str());

  state_->error[0] = '\0';
  const CURLcode code = curl_easy_perform(curl);
  if (code != CURLE_OK) {
    std::string detail = state_->error[0] != '\0' ? state_->error : curl_easy_strerror(code);
    // A bad CA file or a TLS mismatch will not heal by retrying.
    const bool permanent = code == CURLE_SSL_CACERT_BADFILE || code == CURLE_URL_MALFORMAT ||
                           code == CURLE_UNSUPPORTED_PROTOCOL;
    std::string message =
        verb + " " + redacted_url_ + std::string(path) + " failed: " + RedactSecrets(detail);
    return permanent ? Error::Permanent(std::move(message)) : Error::Transient(std::move(message));
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

}  // namespace pgderive
