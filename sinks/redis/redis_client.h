#pragma once

// A Redis connection over hiredis that sends many commands in one write and reads all
// replies back: one round trip per batch (pipelining). Binary-safe: every argument is
// passed with its length.
//
// A long batch goes out in pieces (Append): what is queued is sent once it passes
// kSendBytes, so that Redis reads and parses one piece while the caller prepares the
// next, instead of the two taking turns.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
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
  // Refused (a permanent Error) while commands queued by Append wait for Replies().
  Result<std::vector<RedisReply>> Pipeline(const std::vector<RedisCommand>& commands);
  Result<RedisReply> Command(const RedisCommand& command);
  // SCAN MATCH `pattern` (COUNT kScanCount a call), each non-empty page of keys to
  // `page`; stops at the first error `page` returns. A key written or deleted while it
  // runs may be missed or seen twice (https://redis.io/commands/scan/ guarantees).
  Status Scan(const std::string& pattern,
              const std::function<Status(const std::vector<RedisReply>&)>& page);
  static constexpr size_t kScanCount = 1000;

  // Queues one command without waiting for its reply, sending what is queued once it
  // passes kSendBytes. Replies() reads the reply of every command queued since the
  // last call, in order (as Pipeline does). A caller that gives up between the two
  // (an error of its own) must call Abandon(): part of the sequence may have reached
  // Redis (say a MULTI and some commands), and only a new connection is sure to drop it.
  Status Append(std::span<const std::string_view> args);
  Result<std::vector<RedisReply>> Replies();
  void Abandon();
  // Commands queued whose replies were not read yet.
  size_t unanswered() const { return unanswered_; }

  static constexpr size_t kSendBytes = size_t{256} << 10;

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
  size_t unanswered_ = 0;
  size_t unsent_bytes_ = 0;  // queued in hiredis's buffer, roughly (arguments only)
  std::string formatted_;    // the command being queued, as the protocol sends it
};

}  // namespace pgderive
