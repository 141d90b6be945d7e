#include "spool/internal/schema_messages.h"

#include <string>
#include <variant>

#include "cdc/pgoutput.h"

namespace pgderive::spool_internal {

namespace {

std::span<const uint8_t> AsBytes(const std::string& bytes) {
  return {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
}

}  // namespace

Result<Lsn> TransactionPosition(std::span<const LogMessage> transaction) {
  if (transaction.empty()) return Error::Permanent("change log: an empty transaction");
  const LogMessage& last = transaction.back();
  if (last.bytes.empty())
    return Error::Permanent("change log: an empty message ends the transaction");
  const char type = last.bytes[0];
  if (type != 'C' && type != 'c' && type != 'K') {
    return Error::Permanent(std::string("change log: the transaction ends with a ") +
                            std::string(PgOutputMessageName(static_cast<uint8_t>(type))) +
                            " message, not a Commit");
  }
  auto decoded = DecodePgOutput(AsBytes(last.bytes), DecodeContext{});
  if (!decoded.ok()) return decoded.error();
  return std::visit(
      [](const auto& message) -> Result<Lsn> {
        using T = std::decay_t<decltype(message)>;
        if constexpr (std::is_same_v<T, CommitMessage> || std::is_same_v<T, StreamCommitMessage> ||
                      std::is_same_v<T, CommitPreparedMessage>) {
          return message.end_lsn;
        } else {
          return Error::Permanent("change log: the transaction does not end with a Commit");
        }
      },
      decoded.value());
}

std::string PlainSchemaMessage(const std::string& bytes, bool in_stream) {
  if (!in_stream || bytes.size() < 5) return bytes;
  std::string plain;
  plain.reserve(bytes.size() - 4);
  plain.push_back(bytes[0]);
  plain.append(bytes, 5, std::string::npos);
  return plain;
}

Status SchemaState::ObserveOne(const LogMessage& message, bool& in_stream) {
  if (message.bytes.empty()) return Status::Ok();
  const char type = message.bytes[0];
  if (type == 'S') {
    in_stream = true;
    return Status::Ok();
  }
  if (type == 'E') {
    in_stream = false;
    return Status::Ok();
  }
  if (type != 'R' && type != 'Y') return Status::Ok();
  auto decoded = DecodePgOutput(AsBytes(message.bytes), DecodeContext{.in_stream = in_stream});
  if (!decoded.ok()) return decoded.error();
  Key key;
  if (const auto* relation = std::get_if<RelationMessage>(&decoded.value())) {
    key = {'R', relation->relation_id.value};
  } else if (const auto* type_message = std::get_if<TypeMessage>(&decoded.value())) {
    key = {'Y', type_message->type_oid};
  } else {
    return Status::Ok();
  }
  messages_[key] = LogMessage{message.lsn, PlainSchemaMessage(message.bytes, in_stream)};
  return Status::Ok();
}

Status SchemaState::Observe(std::span<const LogMessage> transaction) {
  bool in_stream = false;
  for (const LogMessage& message : transaction) {
    if (Status status = ObserveOne(message, in_stream); !status.ok()) return status;
  }
  return Status::Ok();
}

}  // namespace pgderive::spool_internal
