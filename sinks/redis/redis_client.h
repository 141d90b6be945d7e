#pragma once

// A Redis connection over hiredis that sends many commands in one write and reads all
// replies back: one round trip per batch (pipelining). Binary-safe: every argument is
// passed with its length.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

struct redisContext;

namespace pgderive {

struct RedisReply {
  enum class Type { kString, kStatus, kInteger, kNil, kError, kArray };
  Type type = Type::kNil;
  std::string str;  // kString, kStatus, kError
  long long integer = 0;
  std::vector<RedisReply> elements;  // kArray
};

using RedisCommand = std::vector<std::string>;

class RedisClient {
 public:
  // url: redis://[[user]:password@]host[:port][/db]. AUTH and SELECT are sent when the
  // URL asks for them. Errors name the redacted URL, never the password.
  static Result<RedisClient> Connect(std::string_view url,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Sends every command, then reads every reply, in order. A Redis error reply for one
  // command is returned as that command's reply (Type::kError), not as a failure of the
  // batch; a broken connection is a transient Error and the client must be reconnected.
  Result<std::vector<RedisReply>> Pipeline(const std::vector<RedisCommand>& commands);
  Result<RedisReply> Command(const RedisCommand& command);

  bool broken() const { return broken_; }

 private:
  struct ContextDeleter {
    void operator()(redisContext* context) const;
  };
  RedisClient(redisContext* context, std::string redacted_url)
      : context_(context), redacted_url_(std::move(redacted_url)) {}
  Error IoError(std::string_view what);

  std::unique_ptr<redisContext, ContextDeleter> context_;
  std::string redacted_url_;
  bool broken_ = false;
};

}  // namespace pgderive
