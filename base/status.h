#pragma once

// The result types every component boundary returns. An Error says *why* a call
// failed so that the supervisor alone can decide what to do:
//   transient - the peer is down or busy: retry with backoff;
//   permanent - the input or the configuration is wrong: stop this view and report;
//   corrupt   - bytes or state that cannot be trusted: stop, never guess.
// Exceptions from libraries are caught in the adapter that called them and turned into
// an Error; they never cross a public header.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace pgderive {

enum class ErrorKind { kTransient, kPermanent, kCorrupt };

std::string_view ErrorKindName(ErrorKind kind);

class Error {
 public:
  Error(ErrorKind kind, std::string message) : kind_(kind), message_(std::move(message)) {}
  static Error Transient(std::string message) {
    return {ErrorKind::kTransient, std::move(message)};
  }
  static Error Permanent(std::string message) {
    return {ErrorKind::kPermanent, std::move(message)};
  }
  static Error Corrupt(std::string message) { return {ErrorKind::kCorrupt, std::move(message)}; }

  ErrorKind kind() const { return kind_; }
  const std::string& message() const { return message_; }
  // "transient: <message>", for logs and test failure output.
  std::string ToString() const;

 private:
  ErrorKind kind_;
  std::string message_;
};

class [[nodiscard]] Status {
 public:
  Status() = default;                                // success
  Status(Error error) : error_(std::move(error)) {}  // NOLINT: implicit on purpose
  static Status Ok() { return {}; }

  bool ok() const { return !error_.has_value(); }
  const Error& error() const { return *error_; }

 private:
  std::optional<Error> error_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}      // NOLINT: implicit on purpose
  Result(Error error) : value_(std::move(error)) {}  // NOLINT: implicit on purpose

  bool ok() const { return std::holds_alternative<T>(value_); }
  T& value() & { return std::get<T>(value_); }
  const T& value() const& { return std::get<T>(value_); }
  T&& value() && { return std::get<T>(std::move(value_)); }
  const Error& error() const { return std::get<Error>(value_); }
  Status status() const { return ok() ? Status::Ok() : Status(error()); }

 private:
  std::variant<T, Error> value_;
};

// The one greppable way to drop an error on purpose; `why` documents the decision.
inline void IgnoreError(const Status& status, std::string_view why) {
  (void)status;
  (void)why;
}

}  // namespace pgderive
