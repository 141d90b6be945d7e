#include "config/url.h"

#include "config/redact.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace pgderive {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> PercentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;  // '%' needs two hex digits after it
    const int hi = HexValue(text[i + 1]);
    const int lo = HexValue(text[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

bool Fail(std::string* why, std::string reason) {
  if (why != nullptr) *why = std::move(reason);
  return false;
}

}  // namespace

std::optional<Url> Url::Parse(std::string_view text, std::string* why) {
  Url url;
  const size_t scheme_end = text.find("://");
  if (scheme_end == std::string_view::npos || scheme_end == 0) {
    Fail(why, "expected scheme://host, e.g. redis://127.0.0.1:6379/0");
    return std::nullopt;
  }
  url.scheme = std::string(text.substr(0, scheme_end));
  std::transform(url.scheme.begin(), url.scheme.end(), url.scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string_view rest = text.substr(scheme_end + 3);

  const size_t authority_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, authority_end);
  std::string_view tail =
      authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);

  // userinfo ends at the last '@' of the authority (a password may contain '@' only
  // percent-encoded, but be lenient the way libpq is).
  const size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    const size_t colon = userinfo.find(':');
    auto user = PercentDecode(userinfo.substr(0, colon));
    if (!user) {
      Fail(why, "bad percent-encoding in the user name");
      return std::nullopt;
    }
    url.user = *user;
    if (colon != std::string_view::npos) {
      auto password = PercentDecode(userinfo.substr(colon + 1));
      if (!password) {
        Fail(why, "bad percent-encoding in the password");
        return std::nullopt;
      }
      url.password = *password;
    }
  }

  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      Fail(why, "unterminated IPv6 address (missing ']')");
      return std::nullopt;
    }
    url.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        Fail(why, "unexpected text after the IPv6 address");
        return std::nullopt;
      }
      port_text = after.substr(1);
    }
  } else {
    const size_t colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (url.host.empty()) {
    Fail(why, "the URL has no host");
    return std::nullopt;
  }
  if (!port_text.empty()) {
    unsigned port = 0;
    auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || ptr != port_text.data() + port_text.size() || port == 0 ||
        port > 65535) {
      Fail(why, "the port is not a number between 1 and 65535");
      return std::nullopt;
    }
    url.port = static_cast<uint16_t>(port);
  }

  const size_t fragment = tail.find('#');
  tail = tail.substr(0, fragment);
  const size_t question = tail.find('?');
  url.path = std::string(tail.substr(0, question));
  if (question != std::string_view::npos) url.query = std::string(tail.substr(question + 1));
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

}  // namespace pgderive
