#include "sinks/redis/redis_client.h"

#include <hiredis/hiredis.h>

#include <charconv>

#include "base/redact.h"
#include "config/url.h"

namespace pgderive {
namespace {

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

RedisReply Convert(const redisReply* reply) {
  RedisReply out;
  switch (reply->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.str.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.str.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::kError;
      out.str.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = reply->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(reply->elements);
      for (size_t i = 0; i < reply->elements; ++i)
        out.elements.push_back(Convert(reply->element[i]));
      break;
    default:
      out.type = RedisReply::Type::kNil;
  }
  return out;
}

timeval ToTimeval(std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  return tv;
}

}  // namespace

void RedisClient::ContextDeleter::operator()(redisContext* context) const { redisFree(context); }

Error RedisClient::IoError(std::string_view what) {
  broken_ = true;
  std::string message = "Redis " + redacted_url_ + ": " + std::string(what);
  if (context_ != nullptr && context_->err != 0) {
    message += ": ";
    message += RedactSecrets(context_->errstr);
  }
  return Error::Transient(std::move(message));
}

Result<RedisClient> RedisClient::Connect(std::string_view url_text,
                                         std::chrono::milliseconds timeout) {
  std::string why;
  auto url = Url::Parse(url_text, &why);
  if (!url) return Error::Permanent("bad Redis URL: " + why);
  if (url->scheme != "redis") {
    return Error::Permanent("bad Redis URL " + url->Redacted() +
                            ": the scheme must be redis:// (TLS is not supported by the "
                            "Debian 12 hiredis 0.14)");
  }
  int db = 0;
  if (url->path.size() > 1) {
    const std::string_view digits = std::string_view(url->path).substr(1);
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), db);
    if (ec != std::errc() || ptr != digits.data() + digits.size() || db < 0) {
      return Error::Permanent("bad Redis URL " + url->Redacted() +
                              ": the path must be a database number, e.g. /0");
    }
  }
  const timeval tv = ToTimeval(timeout);
  RedisClient client(redisConnectWithTimeout(url->host.c_str(), url->port.value_or(6379), tv),
                     url->Redacted());
  if (client.context_ == nullptr) return Error::Transient("out of memory creating a Redis context");
  if (client.context_->err != 0) return client.IoError("cannot connect");
  if (redisSetTimeout(client.context_.get(), tv) != REDIS_OK) {
    return client.IoError("cannot set the socket timeout");
  }

  if (url->password) {
    RedisCommand auth = {"AUTH"};
    if (!url->user.empty()) auth.push_back(url->user);
    auth.push_back(*url->password);
    auto reply = client.Command(auth);
    if (!reply.ok()) return reply.error();
    // The server's text ("WRONGPASS invalid username-password pair") names no secret.
    if (reply.value().type == RedisReply::Type::kError) {
      return Error::Permanent("Redis " + client.redacted_url_ +
                              ": authentication failed: " + reply.value().str);
    }
  }
  if (db != 0) {
    auto reply = client.Command({"SELECT", std::to_string(db)});
    if (!reply.ok()) return reply.error();
    if (reply.value().type == RedisReply::Type::kError) {
      return Error::Permanent("Redis " + client.redacted_url_ + ": SELECT " + std::to_string(db) +
                              " failed: " + reply.value().str);
    }
  }
  return client;
}

Status RedisClient::Append(std::span<const std::string_view> args) {
  if (broken_) return Error::Transient("Redis " + redacted_url_ + ": connection is broken");
  // The protocol (RESP) written here in one pass, which hiredis's own formatting
  // (redisAppendCommandArgv) does in two with a printf-like step per argument.
  formatted_.clear();
  auto append_length = [&](char type, size_t n) {
    char digits[24];
    digits[0] = type;
    char* end = std::to_chars(digits + 1, digits + sizeof digits - 2, n).ptr;
    *end++ = '\r';
    *end++ = '\n';
    formatted_.append(digits, end);
  };
  size_t total = 16;
  for (std::string_view arg : args) total += arg.size() + 16;
  formatted_.reserve(total);
  append_length('*', args.size());
  for (std::string_view arg : args) {
    append_length('$', arg.size());
    formatted_.append(arg);
    formatted_.append("\r\n", 2);
    unsent_bytes_ += arg.size();
  }
  if (redisAppendFormattedCommand(context_.get(), formatted_.data(), formatted_.size()) !=
      REDIS_OK) {
    return IoError("cannot queue a command");
  }
  ++unanswered_;
  if (unsent_bytes_ >= kSendBytes) {
    unsent_bytes_ = 0;
    int done = 0;
    while (done == 0) {
      if (redisBufferWrite(context_.get(), &done) != REDIS_OK) return IoError("cannot send");
    }
  }
  return Status::Ok();
}

Result<std::vector<RedisReply>> RedisClient::Replies() {
  if (broken_) return Error::Transient("Redis " + redacted_url_ + ": connection is broken");
  std::vector<RedisReply> replies;
  replies.reserve(unanswered_);
  unsent_bytes_ = 0;
  // The first read sends whatever is still queued.
  for (; unanswered_ > 0; --unanswered_) {
    void* raw = nullptr;
    if (redisGetReply(context_.get(), &raw) != REDIS_OK || raw == nullptr) {
      return IoError("lost the connection while reading replies");
    }
    ReplyPtr reply(static_cast<redisReply*>(raw));
    replies.push_back(Convert(reply.get()));
  }
  return replies;
}

void RedisClient::Abandon() {
  if (unanswered_ == 0 || broken_) return;
  broken_ = true;
  context_.reset();
}

Result<std::vector<RedisReply>> RedisClient::Pipeline(const std::vector<RedisCommand>& commands) {
  // A round trip while queued commands wait for Replies() (say an open MULTI) would read
  // their replies as its own, and send its commands into their MULTI: refused, loudly.
  if (unanswered_ > 0 && !broken_) {
    return Error::Permanent("Redis " + redacted_url_ + ": a command sent while " +
                            std::to_string(unanswered_) +
                            " queued command(s) wait for their replies (an open MULTI); "
                            "a pgderive bug - please report it");
  }
  std::vector<std::string_view> args;
  for (const RedisCommand& command : commands) {
    args.assign(command.begin(), command.end());
    Status status = Append(args);
    if (!status.ok()) return status.error();
  }
  return Replies();
}

Status RedisClient::Scan(const std::string& pattern,
                         const std::function<Status(const std::vector<RedisReply>&)>& page) {
  std::string cursor = "0";
  do {
    auto reply = Command({"SCAN", cursor, "MATCH", pattern, "COUNT", std::to_string(kScanCount)});
    if (!reply.ok()) return reply.error();
    const RedisReply& r = reply.value();
    if (r.type != RedisReply::Type::kArray || r.elements.size() != 2) {
      return Error::Transient("SCAN " + pattern + ": " + r.str);
    }
    cursor = r.elements[0].str;
    if (r.elements[1].elements.empty()) continue;
    Status status = page(r.elements[1].elements);
    if (!status.ok()) return status;
  } while (cursor != "0");
  return Status::Ok();
}

Result<RedisReply> RedisClient::Command(const RedisCommand& command) {
  auto replies = Pipeline({command});
  if (!replies.ok()) return replies.error();
  return std::move(replies.value().front());
}

}  // namespace pgderive
