#include "base/redact.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace pgderive {
namespace {

constexpr std::string_view kMask = "***";
constexpr std::array<std::string_view, 5> kSecretKeys = {"password", "sslpassword", "passwd",
                                                         "token", "secret"};

bool IsKeyChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// Characters that end the authority part of a URL embedded in free text.
bool EndsAuthority(char c) {
  return c == '/' || c == '?' || c == '#' || c == '"' || c == '\'' || c == ',' || c == ';' ||
         c == ')' || c == ']' || c == '>' || std::isspace(static_cast<unsigned char>(c));
}

// Pass 1: scheme://user:secret@host -> scheme://user:***@host.
std::string RedactUserinfo(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (true) {
    const size_t sep = text.find("://", pos);
    if (sep == std::string_view::npos) break;
    const size_t start = sep + 3;
    size_t end = start;
    while (end < text.size() && !EndsAuthority(text[end])) ++end;
    std::string_view authority = text.substr(start, end - start);
    const size_t at = authority.rfind('@');
    out.append(text.substr(pos, start - pos));
    if (at != std::string_view::npos) {
      const size_t colon = authority.substr(0, at).find(':');
      if (colon != std::string_view::npos) {
        out.append(authority.substr(0, colon + 1));
        out.append(kMask);
        out.append(authority.substr(at));
      } else {
        out.append(authority);
      }
    } else {
      out.append(authority);
    }
    pos = end;
  }
  out.append(text.substr(pos));
  return out;
}

// Pass 2: key=value where key is password-like. Handles libpq's quoting ('a b\'c')
// and URL query values (ending at '&').
std::string RedactKeyValues(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (!IsKeyChar(text[i]) || (i > 0 && IsKeyChar(text[i - 1]))) {
      out.push_back(text[i++]);
      continue;
    }
    size_t key_end = i;
    while (key_end < text.size() && IsKeyChar(text[key_end])) ++key_end;
    std::string_view key = text.substr(i, key_end - i);
    size_t eq = key_end;
    while (eq < text.size() && text[eq] == ' ') ++eq;
    bool secret = false;
    for (std::string_view candidate : kSecretKeys)
      secret = secret || EqualsIgnoreCase(key, candidate);
    if (!secret || eq >= text.size() || text[eq] != '=') {
      out.append(key);
      i = key_end;
      continue;
    }
    size_t value = eq + 1;
    while (value < text.size() && text[value] == ' ') ++value;
    size_t value_end = value;
    if (value < text.size() && text[value] == '\'') {
      value_end = value + 1;
      while (value_end < text.size() && text[value_end] != '\'') {
        if (text[value_end] == '\\') ++value_end;
        ++value_end;
      }
      if (value_end < text.size()) ++value_end;  // closing quote
    } else {
      while (value_end < text.size() && text[value_end] != '&' &&
             !std::isspace(static_cast<unsigned char>(text[value_end])) && text[value_end] != '"' &&
             text[value_end] != ',') {
        ++value_end;
      }
    }
    out.append(text.substr(i, value - i));
    out.append(kMask);
    i = std::min(value_end, text.size());
  }
  return out;
}

}  // namespace

std::string RedactSecrets(std::string_view text) { return RedactKeyValues(RedactUserinfo(text)); }

}  // namespace pgderive
