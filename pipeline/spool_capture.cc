#include "pipeline/spool_capture.h"

#include <string>

namespace pgderive {
namespace {

uint64_t ReadBigEndian64(std::span<const uint8_t> data, size_t at) {
  uint64_t value = 0;
  for (size_t i = 0; i < 8; ++i) value = (value << 8) | data[at + i];
  return value;
}

}  // namespace

Status SpoolCapture::Add(Lsn lsn, std::span<const uint8_t> data) {
  if (data.empty()) return Error::Corrupt("pgoutput message: empty message");
  const char type = static_cast<char>(data[0]);
  if (type == 'B') {
    // 'B' Int64 final_lsn (the commit's LSN) ...
    if (in_transaction_) return Error::Corrupt("pgoutput: Begin inside a transaction");
    if (data.size() < 9) return Error::Corrupt("pgoutput: Begin message too short");
    in_transaction_ = true;
    transaction_.clear();
    // A transaction commits after the end of the one before it: a commit LSN before the
    // last position appended is one the log holds.
    skipping_ = Lsn{ReadBigEndian64(data, 1)} < appended_;
  } else if (!in_transaction_) {
    if (type == 'M') return Status::Ok();  // a non-transactional message: not ours
    return Error::Corrupt(std::string("pgoutput: message '") + type +
                          "' outside a transaction (the change log takes whole transactions; "
                          "streaming of in-progress transactions must be off)");
  }
  if (!skipping_) {
    transaction_.push_back(
        LogMessage{lsn, std::string(reinterpret_cast<const char*>(data.data()), data.size())});
  }
  if (type != 'C') return Status::Ok();
  // 'C' Int8 flags, Int64 commit_lsn, Int64 end_lsn, Int64 commit_time.
  if (data.size() < 25) return Error::Corrupt("pgoutput: Commit message too short");
  in_transaction_ = false;
  if (skipping_) {
    skipping_ = false;
    return Status::Ok();
  }
  Status status = log_.Append(transaction_);
  if (!status.ok()) return status;
  for (const LogMessage& message : transaction_) appended_bytes_ += message.bytes.size();
  appended_ = Lsn{ReadBigEndian64(data, 10)};
  unsynced_ = true;
  unwritten_ = true;
  transaction_.clear();
  return Status::Ok();
}

Result<Lsn> SpoolCapture::Write() {
  if (unwritten_) {
    auto written = log_.Write();
    if (!written.ok()) return written.error();
    unwritten_ = false;
  }
  return log_.Durable();
}

Result<Lsn> SpoolCapture::Sync() {
  if (!unsynced_) return log_.Durable();
  auto durable = log_.Sync();
  if (durable.ok()) {
    unsynced_ = false;
    unwritten_ = false;
  }
  return durable;
}

void SpoolCapture::Reset() {
  transaction_.clear();
  in_transaction_ = false;
  skipping_ = false;
}

}  // namespace pgderive
