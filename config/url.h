#pragma once

// A URL split into parts: scheme://[user[:password]@]host[:port][/path][?query].
// Used for redis://, http(s):// and postgresql:// endpoints. User and password are
// percent-decoded. Never log a Url directly: use Redacted().

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgderive {

struct Url {
  std::string scheme;  // lower-cased
  std::string user;
  std::optional<std::string> password;
  std::string host;  // without the brackets of an IPv6 literal
  std::optional<uint16_t> port;
  std::string path;   // "" or starts with '/' (a lone "/" is stored as "")
  std::string query;  // without the '?'

  // Parses `text`; on failure returns nullopt and, when `why` is given, a reason that
  // never repeats the password.
  static std::optional<Url> Parse(std::string_view text, std::string* why = nullptr);
  // The URL with the password replaced by "***"; safe for logs and messages.
  std::string Redacted() const;
};

// `url` (scheme://host...) with "user:password@" put in front of its host, each
// percent-encoded; an empty password adds the user alone. `url` must not have a
// userinfo of its own. The result holds a secret: never log it.
std::string AddUserinfo(std::string_view url, std::string_view user, std::string_view password);

}  // namespace pgderive
