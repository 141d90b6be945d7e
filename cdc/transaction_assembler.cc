#include "cdc/transaction_assembler.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <vector>

#include "cdc/row_json.h"

namespace pgderive {
namespace {

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// Inside a stream, R/Y/I/U/D/T/M carry the (sub)transaction's xid right after the type.
bool CarriesStreamXid(uint8_t type) {
  return type == 'R' || type == 'Y' || type == 'I' || type == 'U' || type == 'D' || type == 'T' ||
         type == 'M';
}

uint32_t PeekXid(std::span<const uint8_t> bytes) {
  return (uint32_t{bytes[1]} << 24) | (uint32_t{bytes[2]} << 16) | (uint32_t{bytes[3]} << 8) |
         uint32_t{bytes[4]};
}

}  // namespace

// One streamed or prepared transaction's messages, in arrival order. Each record is
// (subxid, bytes); in memory until the budget runs out, then in a spill file with the
// same records framed as [u32 subxid][u32 length][bytes].
struct TransactionAssembler::Buffer {
  struct Record {
    uint32_t subxid;
    std::vector<uint8_t> bytes;
  };
  std::vector<Record> records;
  size_t memory = 0;
  std::string spill_path;
  FilePtr spill;
  std::set<uint32_t> aborted_subxids;
  bool records_have_xid = true;  // streamed: yes; prepared without streaming: no
  bool prepared = false;
};

TransactionAssembler::TransactionAssembler(AssemblerOptions options, ChangeConsumer& consumer)
    : options_(std::move(options)), consumer_(consumer) {}

TransactionAssembler::~TransactionAssembler() { ResetPartial(); }

void TransactionAssembler::Drop(uint32_t xid) {
  auto it = buffers_.find(xid);
  if (it == buffers_.end()) return;
  memory_ -= it->second->memory;
  if (it->second->spill) {
    it->second->spill.reset();
    std::remove(it->second->spill_path.c_str());
  }
  buffers_.erase(it);
}

void TransactionAssembler::ResetPartial() {
  while (!buffers_.empty()) Drop(buffers_.begin()->first);
  in_transaction_ = false;
  skipping_ = false;
  in_stream_ = false;
  preparing_xid_.reset();
}

AssemblerStats TransactionAssembler::stats() const {
  return AssemblerStats{memory_, spilled_, buffers_.size()};
}

Error TransactionAssembler::Unexpected(std::string_view what) const {
  return Error::Corrupt("pgoutput stream out of order: " + std::string(what));
}

Status TransactionAssembler::ApplyRelation(const RelationMessage& message) {
  auto schema = std::make_shared<RelationSchema>();
  schema->id = message.relation_id;
  schema->nspname = message.nspname;
  schema->relname = message.relname;
  schema->replica_identity = message.replica_identity;
  schema->columns.reserve(message.attributes.size());
  for (const RelationAttribute& a : message.attributes) {
    schema->columns.push_back(
        ColumnSchema{std::string(a.name), a.type_oid, a.atttypmod, a.is_key(), {}});
  }
  if (message.replica_identity == 'f' && options_.full_identity_key) {
    // FULL marks every column; the row's key is the table's primary key.
    auto key = options_.full_identity_key(message.relation_id);
    if (!key.ok()) return key.error();
    for (ColumnSchema& column : schema->columns) {
      column.key =
          std::find(key.value().begin(), key.value().end(), column.name) != key.value().end();
    }
  }
  RenderSchemaJson(*schema);
  relations_[message.relation_id.value] = std::move(schema);
  return Status::Ok();
}

Status TransactionAssembler::HandleInTransaction(const PgOutputMessage& message) {
  if (const auto* relation = std::get_if<RelationMessage>(&message))
    return ApplyRelation(*relation);
  if (std::holds_alternative<TypeMessage>(message) ||
      std::holds_alternative<OriginMessage>(message)) {
    return Status::Ok();  // type names and origins are not needed downstream yet
  }
  Change change;
  change.commit_lsn = current_.commit_lsn;
  change.message = &message;
  // The cache entry itself backs the span: no copy, no allocation per change.
  auto find = [&](RelationId id) -> const std::shared_ptr<const RelationSchema>* {
    auto it = relations_.find(id.value);
    return it == relations_.end() ? nullptr : &it->second;
  };
  auto missing = [&](RelationId id) {
    return Unexpected("a change for relation " + std::to_string(id.value) +
                      " before its Relation message");
  };
  std::optional<RelationId> single;
  if (const auto* m = std::get_if<InsertMessage>(&message)) {
    single = m->relation_id;
  } else if (const auto* m = std::get_if<UpdateMessage>(&message)) {
    single = m->relation_id;
  } else if (const auto* m = std::get_if<DeleteMessage>(&message)) {
    single = m->relation_id;
  } else if (const auto* m = std::get_if<TruncateMessage>(&message)) {
    truncated_.clear();
    for (RelationId id : m->relation_ids) {
      const auto* schema = find(id);
      if (schema == nullptr) return missing(id);
      truncated_.push_back(*schema);
    }
    change.relations = truncated_;
  } else if (!std::holds_alternative<LogicalMessage>(message)) {
    return Unexpected("a transaction-control message inside a transaction");
  }
  if (single) {
    const auto* schema = find(*single);
    if (schema == nullptr) return missing(*single);
    change.relations = std::span(schema, 1);
  }
  if (skipping_) return Status::Ok();
  change.index = next_index_++;
  return consumer_.OnChange(change);
}

Status TransactionAssembler::MaybeSpill(Buffer& buffer) {
  if (memory_ <= options_.memory_limit || buffer.memory == 0) return Status::Ok();
  if (!buffer.spill) {
    std::error_code ec;
    std::filesystem::create_directories(options_.spill_dir, ec);
    buffer.spill_path = options_.spill_dir + "/pgderive-" + std::to_string(getpid()) + "-" +
                        std::to_string(reinterpret_cast<uintptr_t>(&buffer)) + ".spill";
    buffer.spill.reset(std::fopen(buffer.spill_path.c_str(), "w+b"));
    if (!buffer.spill) {
      return Error::Transient("cannot create spill file " + buffer.spill_path + ": " +
                              std::strerror(errno));
    }
  }
  for (const Buffer::Record& record : buffer.records) {
    const uint32_t header[2] = {record.subxid, static_cast<uint32_t>(record.bytes.size())};
    if (std::fwrite(header, sizeof header, 1, buffer.spill.get()) != 1 ||
        std::fwrite(record.bytes.data(), 1, record.bytes.size(), buffer.spill.get()) !=
            record.bytes.size()) {
      return Error::Transient("cannot write spill file " + buffer.spill_path + ": " +
                              std::strerror(errno));
    }
    spilled_ += sizeof header + record.bytes.size();
  }
  memory_ -= buffer.memory;
  buffer.memory = 0;
  buffer.records.clear();
  buffer.records.shrink_to_fit();
  return Status::Ok();
}

Status TransactionAssembler::Append(uint32_t top_xid, uint32_t subxid,
                                    std::span<const uint8_t> bytes, bool records_have_xid) {
  auto& slot = buffers_[top_xid];
  if (!slot) {
    slot = std::make_unique<Buffer>();
    slot->records_have_xid = records_have_xid;
  }
  Buffer& buffer = *slot;
  buffer.records.push_back(
      Buffer::Record{subxid, std::vector<uint8_t>(bytes.begin(), bytes.end())});
  const size_t cost = bytes.size() + sizeof(Buffer::Record);
  buffer.memory += cost;
  memory_ += cost;
  // Over budget, this buffer's records move to its spill file. Order holds: spilling
  // always moves every in-memory record, so the file holds only older records than
  // memory, and Replay reads the file first.
  return MaybeSpill(buffer);
}

Status TransactionAssembler::Replay(uint32_t xid, const TransactionInfo& info) {
  auto it = buffers_.find(xid);
  if (it == buffers_.end()) {
    return Unexpected("commit of transaction " + std::to_string(xid) + " that was never received");
  }
  Buffer& buffer = *it->second;
  current_ = info;
  next_index_ = 0;
  skipping_ = info.commit_lsn <= last_committed_;
  Status status;
  if (!skipping_) status = consumer_.OnBegin(info);
  const DecodeContext context{.in_stream = buffer.records_have_xid};
  auto handle = [&](uint32_t subxid, std::span<const uint8_t> bytes) -> Status {
    if (buffer.aborted_subxids.contains(subxid)) return Status::Ok();
    auto message = DecodePgOutput(bytes, context);
    if (!message.ok()) return message.error();
    return HandleInTransaction(message.value());
  };
  if (status.ok() && buffer.spill) {
    // Spilled part first (it is older), read back one record at a time.
    std::FILE* file = buffer.spill.get();
    if (std::fflush(file) != 0 || std::fseek(file, 0, SEEK_SET) != 0) {
      status = Error::Transient("cannot rewind spill file " + buffer.spill_path);
    }
    std::vector<uint8_t> bytes;
    uint32_t header[2];
    while (status.ok() && std::fread(header, sizeof header, 1, file) == 1) {
      bytes.resize(header[1]);
      if (std::fread(bytes.data(), 1, bytes.size(), file) != bytes.size()) {
        status = Error::Corrupt("spill file " + buffer.spill_path + " is truncated");
        break;
      }
      status = handle(header[0], bytes);
    }
  }
  for (size_t i = 0; status.ok() && i < buffer.records.size(); ++i) {
    status = handle(buffer.records[i].subxid, buffer.records[i].bytes);
  }
  if (status.ok() && !skipping_) status = consumer_.OnCommit(info);
  if (status.ok()) last_committed_ = std::max(last_committed_, info.commit_lsn);
  skipping_ = false;
  Drop(xid);
  return status;
}

Status TransactionAssembler::Process(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return Error::Corrupt("pgoutput message: empty message");
  const uint8_t type = bytes[0];

  // Inside a stream, every data message is buffered under its top-level transaction.
  if (in_stream_ && CarriesStreamXid(type)) {
    if (bytes.size() < 5) return Error::Corrupt("streamed pgoutput message without its xid");
    return Append(stream_xid_, PeekXid(bytes), bytes, /*records_have_xid=*/true);
  }
  // Between Begin Prepare and Prepare, the prepared transaction's messages are held.
  if (preparing_xid_ && CarriesStreamXid(type)) {
    return Append(*preparing_xid_, *preparing_xid_, bytes, /*records_have_xid=*/false);
  }

  auto decoded = DecodePgOutput(bytes, DecodeContext{});
  if (!decoded.ok()) return decoded.error();
  const PgOutputMessage& message = decoded.value();

  if (const auto* begin = std::get_if<BeginMessage>(&message)) {
    if (in_transaction_ || in_stream_) return Unexpected("Begin inside a transaction");
    in_transaction_ = true;
    current_ = TransactionInfo{begin->xid, begin->final_lsn, Lsn{}, begin->commit_time, false};
    next_index_ = 0;
    skipping_ = begin->final_lsn <= last_committed_;
    return skipping_ ? Status::Ok() : consumer_.OnBegin(current_);
  }
  if (const auto* commit = std::get_if<CommitMessage>(&message)) {
    if (!in_transaction_) return Unexpected("Commit without Begin");
    if (commit->commit_lsn != current_.commit_lsn) {
      return Unexpected("Commit at " + commit->commit_lsn.ToString() + " for a Begin at " +
                        current_.commit_lsn.ToString());
    }
    in_transaction_ = false;
    current_.end_lsn = commit->end_lsn;
    const bool skipped = skipping_;
    skipping_ = false;
    if (skipped) return Status::Ok();
    Status status = consumer_.OnCommit(current_);
    if (status.ok()) last_committed_ = std::max(last_committed_, current_.commit_lsn);
    return status;
  }
  if (in_transaction_) return HandleInTransaction(message);

  if (const auto* start = std::get_if<StreamStartMessage>(&message)) {
    if (in_stream_) return Unexpected("Stream Start inside a stream");
    in_stream_ = true;
    stream_xid_ = start->xid.value;
    if (start->first_segment && buffers_.contains(stream_xid_)) {
      return Unexpected("first segment of transaction " + std::to_string(stream_xid_) +
                        " that is already open");
    }
    // The transaction is open from its first Stream Start, even if no chunk carries a
    // change of ours (a large transaction on other tables streams empty chunks, then
    // its Stream Commit, which must still arrive as a transaction: it moves checkpoints).
    auto& slot = buffers_[stream_xid_];
    if (!slot) {
      slot = std::make_unique<Buffer>();
      slot->records_have_xid = true;
    }
    return Status::Ok();
  }
  if (std::holds_alternative<StreamStopMessage>(message)) {
    if (!in_stream_) return Unexpected("Stream Stop outside a stream");
    in_stream_ = false;
    return Status::Ok();
  }
  if (const auto* commit = std::get_if<StreamCommitMessage>(&message)) {
    if (in_stream_) return Unexpected("Stream Commit inside a stream");
    return Replay(commit->xid.value, TransactionInfo{commit->xid, commit->commit_lsn,
                                                     commit->end_lsn, commit->commit_time, true});
  }
  if (const auto* abort = std::get_if<StreamAbortMessage>(&message)) {
    if (abort->subxid == abort->xid) {
      Drop(abort->xid.value);
    } else if (auto it = buffers_.find(abort->xid.value); it != buffers_.end()) {
      it->second->aborted_subxids.insert(abort->subxid.value);
    }
    return Status::Ok();
  }
  if (const auto* begin = std::get_if<BeginPrepareMessage>(&message)) {
    if (preparing_xid_) return Unexpected("Begin Prepare inside a prepared transaction");
    preparing_xid_ = begin->xid.value;
    auto& slot = buffers_[begin->xid.value];
    if (!slot) {
      slot = std::make_unique<Buffer>();
      slot->records_have_xid = false;
    }
    return Status::Ok();
  }
  if (const auto* prepare = std::get_if<PrepareMessage>(&message)) {
    if (!preparing_xid_ || *preparing_xid_ != prepare->xid.value) {
      return Unexpected("Prepare without its Begin Prepare");
    }
    buffers_[prepare->xid.value]->prepared = true;
    preparing_xid_.reset();
    return Status::Ok();
  }
  if (const auto* prepare = std::get_if<StreamPrepareMessage>(&message)) {
    auto it = buffers_.find(prepare->xid.value);
    if (it == buffers_.end()) return Unexpected("Stream Prepare of an unknown transaction");
    it->second->prepared = true;
    return Status::Ok();
  }
  if (const auto* commit = std::get_if<CommitPreparedMessage>(&message)) {
    return Replay(commit->xid.value, TransactionInfo{commit->xid, commit->commit_lsn,
                                                     commit->end_lsn, commit->commit_time, true});
  }
  if (const auto* rollback = std::get_if<RollbackPreparedMessage>(&message)) {
    Drop(rollback->xid.value);
    return Status::Ok();
  }
  if (const auto* relation = std::get_if<RelationMessage>(&message))
    return ApplyRelation(*relation);
  if (std::holds_alternative<TypeMessage>(message)) return Status::Ok();
  if (const auto* logical = std::get_if<LogicalMessage>(&message)) {
    if (logical->transactional())
      return Unexpected("a transactional Message outside a transaction");
    // A non-transactional message is decoded at its own LSN: deliver it as a
    // transaction of its own, which keeps commit-LSN order and gives consumers a
    // position to confirm.
    if (logical->lsn <= last_committed_) return Status::Ok();
    const TransactionInfo info{Xid{}, logical->lsn, logical->lsn, 0, false};
    Status status = consumer_.OnBegin(info);
    current_ = info;
    Change change;
    change.commit_lsn = logical->lsn;
    change.message = &message;
    if (status.ok()) status = consumer_.OnChange(change);
    if (status.ok()) status = consumer_.OnCommit(info);
    if (status.ok()) last_committed_ = logical->lsn;
    return status;
  }
  return Unexpected(std::string(PgOutputMessageName(type)) + " outside a transaction");
}

}  // namespace pgderive
