#include "config/url.h"

#include <curl/curl.h>

#include <cctype>
#include <memory>

#include "base/number.h"
#include "base/redact.h"

namespace pgderive {
namespace {

struct CurlUrlDeleter {
  void operator()(CURLU* handle) const { curl_url_cleanup(handle); }
};
struct CurlFree {
  void operator()(char* part) const { curl_free(part); }
};

// One part of a parsed URL; nullopt when the URL does not have it.
std::optional<std::string> Part(CURLU* handle, CURLUPart what, unsigned flags = 0) {
  char* raw = nullptr;
  if (curl_url_get(handle, what, &raw, flags) != CURLUE_OK || raw == nullptr) return std::nullopt;
  std::unique_ptr<char, CurlFree> owned(raw);
  return std::string(owned.get());
}

void Explain(std::string* why, std::string reason) {
  if (why != nullptr) *why = std::move(reason);
}

}  // namespace

// libcurl's URL API does the parsing (RFC 3986, percent-decoding, IPv6 literals);
// CURLU_NON_SUPPORT_SCHEME lets it take redis:// and postgresql:// as well. Its error
// texts name the part at fault and never echo the URL, so they are safe to pass on.
std::optional<Url> Url::Parse(std::string_view text, std::string* why) {
  if (text.find("://") == std::string_view::npos) {
    Explain(why, "expected scheme://host, e.g. redis://127.0.0.1:6379/0");
    return std::nullopt;
  }
  std::unique_ptr<CURLU, CurlUrlDeleter> handle(curl_url());
  if (handle == nullptr) {
    Explain(why, "out of memory");
    return std::nullopt;
  }
  const std::string owned(text);
  const CURLUcode code = curl_url_set(handle.get(), CURLUPART_URL, owned.c_str(),
                                      CURLU_NON_SUPPORT_SCHEME | CURLU_PATH_AS_IS);
  if (code != CURLUE_OK) {
    Explain(why, curl_url_strerror(code));
    return std::nullopt;
  }
  Url url;
  url.scheme = Part(handle.get(), CURLUPART_SCHEME).value_or("");
  url.host = Part(handle.get(), CURLUPART_HOST, CURLU_URLDECODE).value_or("");
  if (url.host.size() >= 2 && url.host.front() == '[' && url.host.back() == ']') {
    url.host = url.host.substr(1, url.host.size() - 2);
  }
  if (url.host.empty()) {
    Explain(why, "the URL has no host");
    return std::nullopt;
  }
  url.user = Part(handle.get(), CURLUPART_USER, CURLU_URLDECODE).value_or("");
  url.password = Part(handle.get(), CURLUPART_PASSWORD, CURLU_URLDECODE);
  if (auto port = Part(handle.get(), CURLUPART_PORT)) {
    // libcurl has checked that it is a number up to 65535; 0 is no port to connect to.
    auto value = ParseNumber<uint16_t>(*port);
    if (!value.ok() || value.value() == 0) {
      Explain(why, "the port is not a number between 1 and 65535");
      return std::nullopt;
    }
    url.port = value.value();
  }
  url.path = Part(handle.get(), CURLUPART_PATH).value_or("");
  if (url.path == "/") url.path.clear();
  url.query = Part(handle.get(), CURLUPART_QUERY).value_or("");
  return url;
}

std::string Url::Redacted() const {
  std::string out = scheme + "://";
  if (!user.empty() || password) {
    out += user;
    if (password) out += ":***";
    out += '@';
  }
  out += host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port) out += ":" + std::to_string(*port);
  out += path;
  if (!query.empty()) out += "?" + RedactSecrets(query);
  return out;
}

namespace {

// RFC 3986 unreserved characters stay; everything else becomes %XX.
std::string PercentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (std::isalnum(byte) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[byte >> 4];
      out += kHex[byte & 0xF];
    }
  }
  return out;
}

}  // namespace

std::string AddUserinfo(std::string_view url, std::string_view user, std::string_view password) {
  const size_t sep = url.find("://");
  if (sep == std::string_view::npos || (user.empty() && password.empty())) return std::string(url);
  std::string out(url.substr(0, sep + 3));
  out += PercentEncode(user);
  if (!password.empty()) out += ":" + PercentEncode(password);
  out += '@';
  out += url.substr(sep + 3);
  return out;
}

}  // namespace pgderive
