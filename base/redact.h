#pragma once

// Secrets never reach a log line or an error message. Every message that may quote a
// DSN, a URL or a server's error text goes through RedactSecrets first.

#include <string>
#include <string_view>

namespace pgderive {

// Replaces, anywhere in `text`:
//   - the password of a URL's userinfo (scheme://user:secret@host -> scheme://user:***@host);
//   - the value of a password-like key in libpq key=value form or a URL query
//     (password=secret, password='se cret', ?sslpassword=x&..., token=..., secret=...).
std::string RedactSecrets(std::string_view text);

}  // namespace pgderive
