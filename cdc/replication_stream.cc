#include "cdc/replication_stream.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>

#include "base/redact.h"

namespace pgderive {

ReplicationStream::ReplicationStream(PgConnection connection, const StreamOptions& options,
                                     int proto_version)
    : connection_(std::move(connection)),
      options_(options),
      proto_version_(proto_version),
      received_(options.start),
      flushed_(options.start),
      last_status_(std::chrono::steady_clock::now()) {}

Error ReplicationStream::ConnectionError(std::string_view what) const {
  return Error::Transient("replication stream of slot " + options_.slot + ": " + std::string(what) +
                          ": " + RedactSecrets(PQerrorMessage(connection_.get())));
}

Result<ReplicationStream> ReplicationStream::Start(PgConnection connection,
                                                   const StreamOptions& options) {
  int proto = options.proto_version;
  if (proto == 0) {
    const int server = connection.server_version();
    proto = server >= 150000 ? 3 : server >= 140000 ? 2 : 1;
  }
  std::string sql = "START_REPLICATION SLOT " + connection.QuoteIdentifier(options.slot) +
                    " LOGICAL " + options.start.ToString() + " (proto_version '" +
                    std::to_string(proto) + "', publication_names " +
                    connection.QuoteLiteral(connection.QuoteIdentifier(options.publication));
  if (options.messages) sql += ", messages 'true'";
  if (options.streaming && proto >= 2) sql += ", streaming 'on'";
  sql += ")";
  PgResultPtr result(PQexec(connection.get(), sql.c_str()));
  if (result == nullptr || PQresultStatus(result.get()) != PGRES_COPY_BOTH) {
    const char* state = result ? PQresultErrorField(result.get(), PG_DIAG_SQLSTATE) : nullptr;
    std::string message = "START_REPLICATION of slot " + options.slot + " failed: " +
                          RedactSecrets(result ? PQresultErrorMessage(result.get())
                                               : PQerrorMessage(connection.get()));
    while (!message.empty() && message.back() == '\n') message.pop_back();
    // An unknown slot or publication is a configuration problem; the rest may heal.
    const bool permanent = state != nullptr && (std::string_view(state) == "42704" ||
                                                std::string_view(state) == "55000");
    return permanent ? Error::Permanent(message) : Error::Transient(message);
  }
  if (PQsetnonblocking(connection.get(), 1) != 0) {
    return Error::Transient("cannot make the replication connection non-blocking");
  }
  return ReplicationStream(std::move(connection), options, proto);
}

void ReplicationStream::ConfirmFlushed(Lsn lsn) { flushed_ = std::max(flushed_, lsn); }

Status ReplicationStream::SendStatus(bool reply_requested) {
  const auto message =
      EncodeStandbyStatusUpdate(received_, flushed_, flushed_,
                                ToPgTimestamp(std::chrono::system_clock::now()), reply_requested);
  if (PQputCopyData(connection_.get(), reinterpret_cast<const char*>(message.data()),
                    static_cast<int>(message.size())) != 1) {
    return ConnectionError("cannot send a status update");
  }
  // Non-blocking: flush what we can now; PQflush returns 1 while data is still queued,
  // and the next call continues it.
  if (PQflush(connection_.get()) < 0) return ConnectionError("cannot flush a status update");
  last_status_ = std::chrono::steady_clock::now();
  sent_received_ = received_;
  sent_flushed_ = flushed_;
  reply_owed_ = false;
  return Status::Ok();
}

std::chrono::steady_clock::time_point ReplicationStream::NextStatusDue() const {
  auto due = last_status_ + options_.status_interval;
  if (reply_owed_) {
    // A reply the server asked for: at once when it tells something new, else after a
    // pause (a stopping server asks again as soon as it has an answer).
    due = std::min(due, received_ != sent_received_ || flushed_ != sent_flushed_
                            ? last_status_
                            : last_status_ + kRepeatReplyInterval);
  }
  return due;
}

Status ReplicationStream::SendStatusIfDue() {
  if (std::chrono::steady_clock::now() < NextStatusDue()) return {};
  return SendStatus();
}

Result<std::optional<XLogData>> ReplicationStream::Next(std::chrono::milliseconds timeout) {
  buffer_.reset();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool looked_at_deadline = false;
  while (true) {
    Status due = SendStatusIfDue();
    if (!due.ok()) return due.error();

    char* raw = nullptr;
    const int length = PQgetCopyData(connection_.get(), &raw, /*async=*/1);
    if (length > 0) {
      buffer_.reset(raw);
      auto message = DecodeWalSenderMessage(std::span<const uint8_t>(
          reinterpret_cast<const uint8_t*>(raw), static_cast<size_t>(length)));
      if (!message.ok()) return message.error();
      if (auto* keepalive = std::get_if<PrimaryKeepalive>(&message.value())) {
        received_ = std::max(received_, keepalive->wal_end);
        if (keepalive->reply_requested) reply_owed_ = reply_requested_ = true;
        // A server that keeps asking must not hold the caller past its deadline: the
        // caller is what moves the flush position the server waits for.
        if (std::chrono::steady_clock::now() >= deadline) {
          Status due = SendStatusIfDue();
          if (!due.ok()) return due.error();
          return std::optional<XLogData>();
        }
        continue;
      }
      XLogData data = std::get<XLogData>(message.value());
      received_ = std::max(received_, data.data_start);
      return std::optional<XLogData>(data);
    }
    if (length == -1) {
      PgResultPtr result(PQgetResult(connection_.get()));
      return Error::Transient("replication stream of slot " + options_.slot +
                              " ended by the server: " +
                              RedactSecrets(result ? PQresultErrorMessage(result.get()) : ""));
    }
    if (length == -2) return ConnectionError("cannot read");

    // Nothing buffered: wait for the socket until the deadline or the next status. At
    // the deadline, one last look at the socket without waiting, so that a zero timeout
    // still takes in what the kernel already holds.
    const auto now = std::chrono::steady_clock::now();
    int wait_ms = 0;
    if (now >= deadline) {
      if (looked_at_deadline) return std::optional<XLogData>();
      looked_at_deadline = true;
    } else {
      const auto until_status = NextStatusDue() - now;
      const auto wait =
          std::min(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now),
                   std::chrono::duration_cast<std::chrono::milliseconds>(until_status));
      wait_ms = static_cast<int>(std::max<int64_t>(wait.count(), 0) + 1);
    }
    pollfd fd{PQsocket(connection_.get()), POLLIN, 0};
    if (PQflush(connection_.get()) == 1) fd.events |= POLLOUT;
    const int ready = poll(&fd, 1, wait_ms);
    if (ready < 0 && errno != EINTR) return ConnectionError("poll failed");
    if (ready > 0 && (fd.revents & (POLLIN | POLLERR | POLLHUP)) != 0 &&
        PQconsumeInput(connection_.get()) == 0) {
      return ConnectionError("connection lost");
    }
  }
}

}  // namespace pgderive
