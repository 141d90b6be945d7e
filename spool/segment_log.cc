// The change log on local disk (the layout is in segment_log.h).
//
//   Append --(buffer, 1 MiB)--> Write: write() --> written (base, offset, position)
//                                                   |  notify_all    |  sync_wanted
//   readers: pread their own fd up to the written  <+                v
//            offset                                  syncer thread: fdatasync --> durable
//
// One writer thread owns the current segment's fd and the write buffer; what readers may
// see (the segment list, the written segment and offset) is in `Shared`, under its mutex.
// A reader never reads past the written offset of the segment being written (always the
// end of a whole transaction), and reads an older segment to its end (a segment is
// written, fsynced and closed before the next begins). The syncer thread fsyncs what is
// written, grouped (one fdatasync covers every Write before it), off the writer's and
// the readers' path: Durable() is the position the last completed fdatasync covered,
// never more.

#include "spool/segment_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "spool/internal/crc32c.h"
#include "spool/internal/schema_messages.h"

namespace pgderive {

namespace {

using spool_internal::SchemaState;

constexpr size_t kRecordHeader = 17;  // Int32 length, Int32 crc32c, Int8 kind, Int64 lsn
// A record's length is an Int32: a pgoutput message of 4 GiB or more cannot be logged.
constexpr uint32_t kMaxRecordBytes = UINT32_MAX - kRecordHeader;
constexpr size_t kWriteBuffer = 1 << 20;
constexpr size_t kReadBuffer = 256 << 10;
// The syncer's fsyncs are at least this far apart (one covers every Write in between),
// unless a Sync waits: the fsync rate stays bounded under a steady stream of small writes,
// and readers never wait for it.
constexpr auto kSyncInterval = std::chrono::milliseconds(10);
constexpr char kMagic[8] = {'P', 'G', 'D', 'S', 'P', 'O', 'O', 'L'};
constexpr uint32_t kVersion = 1;
constexpr size_t kSegmentHeaderPayload = 8 + 4 + 1 + 8 + 4;  // magic, version, has_prev, prev, n

enum RecordKind : uint8_t {
  kSegmentHeader = 1,  // lsn: the segment's start; payload: magic, version, prev, count
  kSchema = 2,         // lsn: the message's; payload: a plain Relation/Type message
  kTransaction = 3,    // lsn: the transaction's position; payload: Int32 message count
  kMessage = 4,        // lsn: XLogData dataStart; payload: the pgoutput message
};

void PutLe32(char* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>(v >> (8 * i));
}
void PutLe64(char* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
}
uint32_t GetLe32(const char* in) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}
uint64_t GetLe64(const char* in) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

// Appends one framed record to `out`.
void AppendRecord(std::string& out, RecordKind kind, Lsn lsn, std::string_view payload) {
  char header[kRecordHeader];
  PutLe32(header, static_cast<uint32_t>(payload.size()));
  header[8] = static_cast<char>(kind);
  PutLe64(header + 9, lsn.value);
  uint32_t crc = spool_internal::Crc32cExtend(0, header + 8, 9);
  crc = spool_internal::Crc32cExtend(crc, payload.data(), payload.size());
  PutLe32(header + 4, crc);
  out.append(header, kRecordHeader);
  out.append(payload);
}

std::string SegmentName(Lsn base) {
  char name[32];
  std::snprintf(name, sizeof name, "%016llX.seg", static_cast<unsigned long long>(base.value));
  return name;
}

std::optional<Lsn> ParseSegmentName(const std::string& name) {
  if (name.size() != 20 || name.substr(16) != ".seg") return std::nullopt;
  uint64_t v = 0;
  for (int i = 0; i < 16; ++i) {
    const char c = name[static_cast<size_t>(i)];
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return Lsn{v};
}

std::string Errno(const std::string& what, const std::string& path) {
  return "change log: " + what + " " + path + ": " + std::strerror(errno);
}

Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return Error::Transient(Errno("cannot open", path));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Error::Transient(Errno("cannot fsync", path));
  return Status::Ok();
}

Status WriteAll(int fd, const char* data, size_t size, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::Transient(Errno("cannot write", path));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

// One record as read back.
struct Record {
  RecordKind kind;
  Lsn lsn;
  std::string_view payload;  // into the reading buffer
  uint64_t offset;           // of the record's first byte in its file
  uint64_t end;              // offset past it
};

// Sequential, verified reading of one segment file up to a limit that may grow.
class SegmentFile {
 public:
  SegmentFile() = default;
  SegmentFile(const SegmentFile&) = delete;
  SegmentFile& operator=(const SegmentFile&) = delete;
  ~SegmentFile() { Close(); }

  Status Open(const std::string& path, uint64_t offset = 0) {
    Close();
    path_ = path;
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      return errno == ENOENT ? Error::Corrupt("change log: segment " + path + " is missing")
                             : Error::Transient(Errno("cannot open", path));
    }
    buffer_.clear();
    buffer_start_ = offset;
    offset_ = offset;
    return Status::Ok();
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool is_open() const { return fd_ >= 0; }
  Result<uint64_t> Size() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return Error::Transient(Errno("cannot stat", path_));
    return static_cast<uint64_t>(st.st_size);
  }
  const std::string& path() const { return path_; }
  uint64_t offset() const { return offset_; }

  enum class Outcome { kRecord, kEnd, kShort, kDamaged };
  // The record at offset(), if it ends at or before `limit`: kEnd at the limit exactly,
  // kShort when the bytes before `limit` end inside a record, kDamaged when its length
  // or checksum is wrong (`error` says where). Advances past a record returned.
  Outcome ReadRecord(uint64_t limit, Record& record, std::string& error) {
    if (offset_ >= limit) return Outcome::kEnd;
    if (limit - offset_ < kRecordHeader) return Outcome::kShort;
    if (!Fill(kRecordHeader, limit, error)) return Outcome::kDamaged;
    const char* header = buffer_.data() + (offset_ - buffer_start_);
    const uint32_t length = GetLe32(header);
    const uint32_t crc = GetLe32(header + 4);
    const uint8_t kind = static_cast<uint8_t>(header[8]);
    if (length > kMaxRecordBytes || kind < kSegmentHeader || kind > kMessage) {
      error = Where() + ": not a record (length " + std::to_string(length) + ", kind " +
              std::to_string(kind) + ")";
      return Outcome::kDamaged;
    }
    if (limit - offset_ < kRecordHeader + length) return Outcome::kShort;
    if (!Fill(kRecordHeader + length, limit, error)) return Outcome::kDamaged;
    header = buffer_.data() + (offset_ - buffer_start_);
    uint32_t actual = spool_internal::Crc32cExtend(0, header + 8, 9);
    actual = spool_internal::Crc32cExtend(actual, header + kRecordHeader, length);
    if (actual != crc) {
      error = Where() + ": checksum mismatch in a record of " + std::to_string(length) + " bytes";
      return Outcome::kDamaged;
    }
    record.kind = static_cast<RecordKind>(kind);
    record.lsn = Lsn{GetLe64(header + 9)};
    record.payload = std::string_view(header + kRecordHeader, length);
    record.offset = offset_;
    record.end = offset_ + kRecordHeader + length;
    offset_ = record.end;
    return Outcome::kRecord;
  }

  std::string Where() const { return "segment " + path_ + " offset " + std::to_string(offset_); }

 private:
  // Makes `size` bytes from offset_ available in buffer_, reading nothing past `limit`
  // (bytes past the written end may be being written).
  bool Fill(size_t size, uint64_t limit, std::string& error) {
    const uint64_t have_end = buffer_start_ + buffer_.size();
    if (offset_ >= buffer_start_ && offset_ + size <= have_end) return true;
    // Keep the bytes from offset_ on, read more after them.
    if (offset_ >= buffer_start_ && offset_ <= have_end) {
      buffer_.erase(0, offset_ - buffer_start_);
    } else {
      buffer_.clear();
    }
    buffer_start_ = offset_;
    const size_t want =
        static_cast<size_t>(std::min<uint64_t>(std::max(size, kReadBuffer), limit - buffer_start_));
    const size_t old = buffer_.size();
    buffer_.resize(want);
    size_t filled = old;
    while (filled < want) {
      const ssize_t n = ::pread(fd_, buffer_.data() + filled, want - filled,
                                static_cast<off_t>(buffer_start_ + filled));
      if (n < 0) {
        if (errno == EINTR) continue;
        error = Errno("cannot read", path_);
        buffer_.resize(filled);
        return false;
      }
      if (n == 0) break;
      filled += static_cast<size_t>(n);
    }
    buffer_.resize(filled);
    if (filled < size) {
      error = Where() + ": the file ends inside a record";
      return false;
    }
    return true;
  }

  std::string path_;
  int fd_ = -1;
  std::string buffer_;
  uint64_t buffer_start_ = 0;  // file offset of buffer_[0]
  uint64_t offset_ = 0;        // next record
};

struct SegmentHeader {
  Lsn base;
  bool has_prev = false;
  Lsn prev;
  uint32_t schema_count = 0;
};

std::string SegmentHeaderPayload(const SegmentHeader& header) {
  std::string payload(kSegmentHeaderPayload, '\0');
  std::memcpy(payload.data(), kMagic, 8);
  PutLe32(payload.data() + 8, kVersion);
  payload[12] = header.has_prev ? 1 : 0;
  PutLe64(payload.data() + 13, header.prev.value);
  PutLe32(payload.data() + 21, header.schema_count);
  return payload;
}

std::optional<SegmentHeader> ParseSegmentHeader(const Record& record) {
  if (record.kind != kSegmentHeader || record.payload.size() != kSegmentHeaderPayload)
    return std::nullopt;
  const char* p = record.payload.data();
  if (std::memcmp(p, kMagic, 8) != 0 || GetLe32(p + 8) != kVersion) return std::nullopt;
  SegmentHeader header;
  header.base = record.lsn;
  header.has_prev = p[12] != 0;
  header.prev = Lsn{GetLe64(p + 13)};
  header.schema_count = GetLe32(p + 21);
  return header;
}

// A segment as the log and its readers know it.
struct SegmentInfo {
  Lsn base;
  std::string path;
  uint64_t bytes = 0;  // written so far (the current segment) or its final size
};

// An open file descriptor, closed when the last holder lets go (the writer, and the
// syncer while it fsyncs it).
struct FileHandle {
  FileHandle(int fd, std::string path) : fd(fd), path(std::move(path)) {}
  FileHandle(const FileHandle&) = delete;
  FileHandle& operator=(const FileHandle&) = delete;
  ~FileHandle() { ::close(fd); }
  const int fd;
  const std::string path;
};

struct Shared {
  mutable std::mutex mutex;
  std::condition_variable readable_changed;  // readers wait on it
  std::condition_variable sync_wanted;       // the syncer waits on it
  std::condition_variable durable_changed;   // Sync waits on it
  std::deque<SegmentInfo> segments;          // by base, ascending
  // What readers may read: the segment holding the written end, and the offset in it
  // (the end of the last whole transaction written).
  Lsn readable_base;
  uint64_t readable_offset = 0;
  uint64_t readable_seq = 0;  // bumped by each Write that wrote more
  // The last transaction written (readable), the file it is in (what the syncer fsyncs
  // to make it durable), and the last durable one (<= written).
  Lsn written;
  std::shared_ptr<FileHandle> written_file;
  Lsn durable;
  std::optional<Error> sync_error;  // a background fdatasync failed: the log is broken
  bool sync_now = false;            // a Sync waits: no interval
  bool stopping = false;

  // The segment after `base` (the first with a greater base), or nullptr.
  const SegmentInfo* After(Lsn base) const {
    for (const SegmentInfo& segment : segments) {
      if (segment.base > base) return &segment;
    }
    return nullptr;
  }
};

class SegmentReader final : public ChangeLogReader {
 public:
  SegmentReader(std::shared_ptr<Shared> shared, Lsn after)
      : shared_(std::move(shared)), after_(after) {}

  Result<std::optional<LogMessage>> Next(std::chrono::milliseconds wait) override {
    if (failed_) return *failed_;
    auto next = NextRecordMessage(wait);
    if (!next.ok()) failed_ = next.error();
    return next;
  }

 private:
  Result<std::optional<LogMessage>> NextRecordMessage(std::chrono::milliseconds wait) {
    for (;;) {
      // Where this segment's readable bytes end, and what follows it.
      uint64_t limit = 0;
      bool complete = false;  // the segment is whole: its end is the limit
      std::optional<SegmentInfo> next_segment;
      uint64_t seen_seq = 0;
      if (file_.is_open() && file_.offset() < known_limit_) {
        limit = known_limit_;  // known written already: no lock per message
      } else {
        std::lock_guard lock(shared_->mutex);
        seen_seq = shared_->readable_seq;
        if (!file_.is_open()) {
          if (Status status = Start(); !status.ok()) return status.error();
          if (!file_.is_open()) goto wait_for_more;  // nothing written yet
        }
        if (base_ == shared_->readable_base) {
          limit = shared_->readable_offset;
        } else if (base_ < shared_->readable_base) {
          // Whole: written and fsynced before the next segment was begun.
          complete = true;
          limit = UINT64_MAX;
          for (const SegmentInfo& segment : shared_->segments) {
            if (segment.base == base_) limit = segment.bytes;
          }
          if (const SegmentInfo* after = shared_->After(base_)) next_segment = *after;
        }
      }
      if (limit == UINT64_MAX) {  // removed since: its size is the file's
        auto size = file_.Size();
        if (!size.ok()) return size.error();
        limit = size.value();
      }
      known_limit_ = limit;
      {
        Record record;
        std::string error;
        switch (file_.ReadRecord(limit, record, error)) {
          case SegmentFile::Outcome::kRecord: {
            auto message = Take(record);
            if (!message.ok()) return message.error();
            if (message.value().has_value()) return message;
            continue;
          }
          case SegmentFile::Outcome::kShort:
            return Error::Corrupt("change log: " + file_.Where() +
                                  ": a record runs past the written end");
          case SegmentFile::Outcome::kDamaged:
            return Error::Corrupt("change log: " + error);
          case SegmentFile::Outcome::kEnd:
            break;
        }
        if (complete) {
          if (remaining_ != 0 || schema_left_ != 0) {
            return Error::Corrupt("change log: " + file_.Where() +
                                  ": the segment ends inside a transaction");
          }
          if (!next_segment) {
            return Error::Corrupt("change log: the segment after " + file_.path() +
                                  " was removed while being read");
          }
          if (Status status = OpenSegment(*next_segment, /*first=*/false); !status.ok())
            return status.error();
          continue;
        }
      }
    wait_for_more:
      if (wait.count() <= 0) return std::optional<LogMessage>();
      std::unique_lock lock(shared_->mutex);
      if (!shared_->readable_changed.wait_for(lock, wait,
                                              [&] { return shared_->readable_seq != seen_seq; })) {
        return std::optional<LogMessage>();
      }
      wait = std::chrono::milliseconds(0);  // one wake: read what it brought, then return
    }
  }

  // Under the mutex: opens the segment holding `after_` (the last one whose base is at
  // or before it), if any is written yet.
  Status Start() {
    if (shared_->segments.empty()) return Status::Ok();
    if (after_ < shared_->segments.front().base) {
      return Error::Permanent("change log: " + after_.ToString() +
                              " is before the oldest position kept, " +
                              shared_->segments.front().base.ToString());
    }
    const SegmentInfo* start = &shared_->segments.front();
    for (const SegmentInfo& segment : shared_->segments) {
      if (segment.base <= after_ && segment.base <= shared_->readable_base) start = &segment;
    }
    if (start->base > shared_->readable_base) return Status::Ok();
    return OpenSegment(*start, /*first=*/true);
  }

  Status OpenSegment(const SegmentInfo& segment, bool first) {
    if (Status status = file_.Open(segment.path); !status.ok()) {
      return Error::Corrupt(status.error().message() + " (removed while being read, or lost)");
    }
    known_limit_ = 0;
    prev_base_ = base_;
    has_prev_base_ = !first;
    base_ = segment.base;
    first_segment_ = first;
    expect_header_ = true;
    return Status::Ok();
  }

  // What one record gives the caller: a message, or nothing (framing, skipped).
  Result<std::optional<LogMessage>> Take(const Record& record) {
    auto damaged = [&](const std::string& what) {
      return Error::Corrupt("change log: segment " + file_.path() + " offset " +
                            std::to_string(record.offset) + ": " + what);
    };
    if (expect_header_) {
      auto header = ParseSegmentHeader(record);
      if (!header || header->base != base_) return damaged("not the segment's header");
      if (has_prev_base_ && (!header->has_prev || header->prev != prev_base_)) {
        return damaged("the segment does not follow " + SegmentName(prev_base_) +
                       " (a segment is missing)");
      }
      expect_header_ = false;
      schema_left_ = header->schema_count;
      return std::optional<LogMessage>();
    }
    if (schema_left_ > 0) {
      if (record.kind != kSchema) return damaged("a Relation/Type record expected");
      --schema_left_;
      if (!first_segment_) return std::optional<LogMessage>();  // the reader has them already
      return std::optional<LogMessage>(LogMessage{record.lsn, std::string(record.payload)});
    }
    if (remaining_ == 0) {
      if (record.kind != kTransaction || record.payload.size() != 4)
        return damaged("a transaction record expected");
      remaining_ = GetLe32(record.payload.data());
      skipping_ = record.lsn <= after_;
      in_stream_ = false;
      if (remaining_ == 0) return damaged("an empty transaction");
      return std::optional<LogMessage>();
    }
    if (record.kind != kMessage || record.payload.empty())
      return damaged("a message record expected");
    --remaining_;
    const char type = record.payload[0];
    if (!skipping_)
      return std::optional<LogMessage>(LogMessage{record.lsn, std::string(record.payload)});
    // A transaction at or before `after`: only its Relation/Type messages, plain.
    if (type == 'S') in_stream_ = true;
    if (type == 'E') in_stream_ = false;
    if (type != 'R' && type != 'Y') return std::optional<LogMessage>();
    return std::optional<LogMessage>(LogMessage{
        record.lsn, spool_internal::PlainSchemaMessage(std::string(record.payload), in_stream_)});
  }

  std::shared_ptr<Shared> shared_;
  Lsn after_;
  std::optional<Error> failed_;
  SegmentFile file_;
  Lsn base_;
  Lsn prev_base_;
  bool has_prev_base_ = false;
  uint64_t known_limit_ = 0;  // the current segment's bytes known written
  bool first_segment_ = true;
  bool expect_header_ = true;
  uint32_t schema_left_ = 0;
  uint32_t remaining_ = 0;  // messages left in the current transaction
  bool skipping_ = false;
  bool in_stream_ = false;
};

// What the scan of the last segment found.
struct ScanResult {
  SegmentHeader header;
  uint64_t good_end = 0;  // end of the last whole transaction (or of the preamble)
  Lsn last_position;      // of the last whole transaction, or the base
  uint64_t transactions = 0;
  SchemaState schema;
  bool preamble_whole = false;
  // Cut back (a torn write or a damaged last record): the position of the first
  // transaction cut when its own record verified, else invalid (unknown).
  bool cut = false;
  Lsn cut_position;
};

class SegmentLog final : public ChangeLog {
 public:
  SegmentLog(SpoolOptions options, Logger& log) : options_(std::move(options)), log_(log) {}
  ~SegmentLog() override {
    if (syncer_.joinable()) {
      {
        std::lock_guard lock(shared_->mutex);
        shared_->stopping = true;
      }
      shared_->sync_wanted.notify_all();
      syncer_.join();
    }
    if (fd_ >= 0) {
      IgnoreError(Flush(), "closing: what was not synced is not durable anyway");
    }
  }

  // The syncer: fsyncs what is written when there is more than is durable, at most every
  // kSyncInterval unless a Sync waits. One fdatasync covers every Write before it
  // (grouped); it runs outside the mutex, so the writer and the readers go on meanwhile.
  void StartSyncer() {
    syncer_ = std::thread([shared = shared_] {
      std::unique_lock lock(shared->mutex);
      auto last = std::chrono::steady_clock::now() - kSyncInterval;
      for (;;) {
        shared->sync_wanted.wait(lock, [&] {
          return shared->stopping ||
                 (!shared->sync_error && shared->written > shared->durable && shared->written_file);
        });
        if (shared->stopping) return;
        shared->sync_wanted.wait_until(lock, last + kSyncInterval,
                                       [&] { return shared->stopping || shared->sync_now; });
        if (shared->stopping) return;
        shared->sync_now = false;
        last = std::chrono::steady_clock::now();
        const Lsn target = shared->written;
        const std::shared_ptr<FileHandle> file = shared->written_file;
        lock.unlock();
        const int rc = ::fdatasync(file->fd);
        const std::string error = rc != 0 ? Errno("cannot fsync", file->path) : std::string();
        lock.lock();
        if (rc != 0) {
          shared->sync_error = Error::Transient(error);
        } else if (target > shared->durable) {
          shared->durable = target;
        }
        shared->durable_changed.notify_all();
      }
    });
  }

  Status Open() {
    std::error_code ec;
    if (!options_.owner.empty()) {
      Status owned = CheckLogOwner(options_.dir, options_.owner);
      if (!owned.ok()) return owned;
    }
    std::filesystem::create_directories(options_.dir, ec);
    if (ec)
      return Error::Transient("change log: cannot create " + options_.dir + ": " + ec.message());
    if (!options_.owner.empty()) {
      const std::string path = (std::filesystem::path(options_.dir) / kLogOwnerFile).string();
      if (!std::filesystem::exists(path, ec)) {
        const std::string text = options_.owner + "\n";
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        const bool written =
            fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
        if (fd >= 0) ::close(fd);
        if (!written) return Error::Transient(Errno("cannot write", path));
      }
    }
    std::vector<std::pair<Lsn, std::string>> found;
    for (const auto& entry : std::filesystem::directory_iterator(options_.dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (auto base = ParseSegmentName(name)) found.emplace_back(*base, entry.path().string());
    }
    if (ec)
      return Error::Transient("change log: cannot list " + options_.dir + ": " + ec.message());
    std::sort(found.begin(), found.end());

    // The last segment: its torn tail is cut back; a segment torn before its preamble
    // was whole (a crash while it was created) holds nothing and goes.
    std::optional<ScanResult> last;
    bool removed_torn = false;  // what it held after its preamble is cut too
    while (!found.empty()) {
      auto scan = ScanLast(found.back().first, found.back().second);
      if (!scan.ok()) return scan.error();
      if (scan.value().preamble_whole) {
        last = std::move(scan).value();
        break;
      }
      log_.Warn("change log: removing a segment torn at its creation",
                {{"file", found.back().second}});
      removed_torn = true;
      if (::unlink(found.back().second.c_str()) != 0)
        return Error::Transient(Errno("cannot remove", found.back().second));
      if (Status status = FsyncPath(options_.dir, true); !status.ok()) return status;
      found.pop_back();
    }
    if (found.empty()) return Status::Ok();  // holds nothing
    if (last->cut || removed_torn) {
      // The first transaction cut; unknown (its own record lost, or a whole segment
      // removed): anything after the recovered durable position.
      cut_from_ = last->cut && !removed_torn && last->cut_position.IsValid()
                      ? last->cut_position
                      : Lsn{last->last_position.value + 1};
    }

    // The sequence: each header names its predecessor.
    std::optional<SegmentHeader> previous;
    for (size_t i = 0; i < found.size(); ++i) {
      SegmentHeader header;
      if (i + 1 == found.size()) {
        header = last->header;
      } else {
        auto read = ReadHeader(found[i].first, found[i].second);
        if (!read.ok()) return read.error();
        header = read.value();
      }
      if (previous && (!header.has_prev || header.prev != previous->base)) {
        return Error::Corrupt(
            "change log: a segment is missing between " + found[i - 1].second + " and " +
            found[i].second + " (" + found[i].second + " offset 0 follows " +
            (header.has_prev ? SegmentName(header.prev) : std::string("nothing")) + ")");
      }
      previous = header;
      struct stat st {};
      if (::stat(found[i].second.c_str(), &st) != 0)
        return Error::Transient(Errno("cannot stat", found[i].second));
      shared_->segments.push_back(
          {found[i].first, found[i].second, static_cast<uint64_t>(st.st_size)});
    }

    // Continue writing the last segment.
    const SegmentInfo& current = shared_->segments.back();
    fd_ = ::open(current.path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0) return Error::Transient(Errno("cannot open", current.path));
    file_ = std::make_shared<FileHandle>(fd_, current.path);
    current_path_ = current.path;
    if (::lseek(fd_, static_cast<off_t>(last->good_end), SEEK_SET) < 0) {
      return Error::Transient(Errno("cannot seek", current.path));
    }
    file_offset_ = last->good_end;
    segment_transactions_ = last->transactions;
    schema_ = std::move(last->schema);
    last_appended_ = last->last_position;
    started_ = true;
    shared_->readable_base = current.base;
    shared_->readable_offset = last->good_end;
    shared_->written = last->last_position;
    shared_->written_file = file_;
    shared_->durable = last->last_position;
    log_.Info("change log opened", {{"dir", options_.dir},
                                    {"segments", std::to_string(shared_->segments.size())},
                                    {"oldest", shared_->segments.front().base.ToString()},
                                    {"durable", last->last_position.ToString()}});
    return Status::Ok();
  }

  Status Append(std::span<const LogMessage> transaction) override {
    if (broken_) return *broken_;
    auto position = spool_internal::TransactionPosition(transaction);
    if (!position.ok()) return position.error();
    if (started_ && position.value() <= last_appended_) {
      return Error::Permanent("change log: transaction at " + position.value().ToString() +
                              " is not after the log's last position " + last_appended_.ToString());
    }
    uint64_t bytes = kRecordHeader + 4;
    for (const LogMessage& message : transaction) {
      if (message.bytes.size() > kMaxRecordBytes) {
        return Error::Permanent("change log: a message of " + std::to_string(message.bytes.size()) +
                                " bytes at " + message.lsn.ToString() +
                                " is larger than a record can be");
      }
      bytes += kRecordHeader + message.bytes.size();
    }
    if (fd_ < 0) {
      if (Status status = BeginSegment(last_appended_); !status.ok()) return Break(status);
    } else if (segment_transactions_ > 0 && PendingOffset() + bytes > options_.segment_bytes) {
      if (Status status = Rollover(); !status.ok()) return Break(status);
    }
    if (Status status = schema_.Observe(transaction); !status.ok()) return status;
    char count[4];
    PutLe32(count, static_cast<uint32_t>(transaction.size()));
    AppendRecord(buffer_, kTransaction, position.value(), std::string_view(count, 4));
    for (const LogMessage& message : transaction) {
      AppendRecord(buffer_, kMessage, message.lsn, message.bytes);
      if (buffer_.size() >= kWriteBuffer) {
        if (Status status = Flush(); !status.ok()) return Break(status);
      }
    }
    last_appended_ = position.value();
    started_ = true;
    ++segment_transactions_;
    return Status::Ok();
  }

  Result<Lsn> Write() override {
    if (broken_) return *broken_;
    if (fd_ >= 0) {
      if (Status status = Flush(); !status.ok()) return Break(status).error();
    }
    {
      std::lock_guard lock(shared_->mutex);
      if (shared_->sync_error) {
        broken_ = *shared_->sync_error;
        return *broken_;
      }
      if (!shared_->segments.empty()) {
        shared_->segments.back().bytes = file_offset_;
        if (shared_->written != last_appended_ ||
            shared_->readable_base != shared_->segments.back().base ||
            shared_->readable_offset != file_offset_) {
          shared_->readable_base = shared_->segments.back().base;
          shared_->readable_offset = file_offset_;
          shared_->written = last_appended_;
          shared_->written_file = file_;
          ++shared_->readable_seq;
        }
      }
    }
    shared_->readable_changed.notify_all();
    shared_->sync_wanted.notify_all();
    return last_appended_;
  }

  Result<Lsn> Sync() override {
    if (auto written = Write(); !written.ok()) return written.error();
    std::unique_lock lock(shared_->mutex);
    if (shared_->durable < shared_->written) {
      shared_->sync_now = true;
      shared_->sync_wanted.notify_all();
    }
    shared_->durable_changed.wait(
        lock, [&] { return shared_->sync_error || shared_->durable >= shared_->written; });
    if (shared_->sync_error) {
      broken_ = *shared_->sync_error;
      return *broken_;
    }
    return shared_->durable;
  }

  Lsn Durable() const override {
    std::lock_guard lock(shared_->mutex);
    return shared_->durable;
  }

  Result<std::unique_ptr<ChangeLogReader>> ReadAfter(Lsn after) override {
    std::lock_guard lock(shared_->mutex);
    if (shared_->segments.empty() && after.IsValid()) {
      return Error::Permanent("change log: " + options_.dir +
                              " holds no segment: the transactions after " + after.ToString() +
                              " are not in it");
    }
    if (!shared_->segments.empty() && after < shared_->segments.front().base) {
      return Error::Permanent(
          "change log: " + after.ToString() + " is before the oldest position kept, " +
          shared_->segments.front().base.ToString() + " (" + shared_->segments.front().path + ")");
    }
    return std::unique_ptr<ChangeLogReader>(std::make_unique<SegmentReader>(shared_, after));
  }

  Status TruncateThrough(Lsn lsn) override {
    if (broken_) return *broken_;
    if (fd_ < 0) {
      // A new log: it begins after `lsn`.
      last_appended_ = lsn;
      started_ = true;
      if (Status status = BeginSegment(lsn); !status.ok()) return Break(status);
      auto synced = Sync();
      return synced.status();
    }
    bool removed = false;
    for (;;) {
      SegmentInfo oldest;
      {
        std::lock_guard lock(shared_->mutex);
        // The oldest segment's transactions end where the next one begins.
        if (shared_->segments.size() < 2 || shared_->segments[1].base > lsn) break;
        oldest = shared_->segments.front();
        shared_->segments.pop_front();
      }
      if (::unlink(oldest.path.c_str()) != 0 && errno != ENOENT) {
        return Error::Transient(Errno("cannot remove", oldest.path));
      }
      removed = true;
    }
    if (removed) return FsyncPath(options_.dir, true);
    return Status::Ok();
  }

  ChangeLogStats Stats() const override {
    std::lock_guard lock(shared_->mutex);
    ChangeLogStats stats;
    stats.segments = shared_->segments.size();
    for (const SegmentInfo& segment : shared_->segments) stats.bytes += segment.bytes;
    if (!shared_->segments.empty()) {
      // Bytes written to the files (what the writer still buffers is not counted).
      stats.oldest = shared_->segments.front().base;
      stats.oldest_segment_bytes = shared_->segments.front().bytes;
      stats.oldest_segment_end =
          shared_->segments.size() > 1 ? shared_->segments[1].base : shared_->durable;
    }
    stats.durable = shared_->durable;
    stats.cut_from = cut_from_;
    return stats;
  }

 private:
  uint64_t PendingOffset() const { return file_offset_ + buffer_.size(); }

  Status Break(Status status) {
    if (!status.ok() && status.error().kind() == ErrorKind::kTransient) {
      // After a failed write or fsync the page cache cannot be trusted (the kernel may
      // have dropped the dirty pages): nothing more is appended by this instance.
      broken_ = status.error();
    }
    return status;
  }

  Status Flush() {
    if (buffer_.empty()) return Status::Ok();
    if (Status status = WriteAll(fd_, buffer_.data(), buffer_.size(), current_path_); !status.ok())
      return status;
    file_offset_ += buffer_.size();
    buffer_.clear();
    {
      std::lock_guard lock(shared_->mutex);
      if (!shared_->segments.empty()) shared_->segments.back().bytes = file_offset_;
    }
    return Status::Ok();
  }

  // Ends the current segment (written and fsynced whole) and begins the next after the
  // last appended position.
  Status Rollover() {
    if (Status status = Flush(); !status.ok()) return status;
    if (::fdatasync(fd_) != 0) return Error::Transient(Errno("cannot fsync", current_path_));
    {
      // Whole and fsynced (Durable() follows at the next Write: it never passes what
      // readers may read).
      std::lock_guard lock(shared_->mutex);
      shared_->segments.back().bytes = file_offset_;
    }
    file_.reset();
    fd_ = -1;
    return BeginSegment(last_appended_);
  }

  // Creates the segment starting after `base`: its header and the Relation/Type
  // messages in force, buffered; the directory entry fsynced.
  Status BeginSegment(Lsn base) {
    SegmentHeader header;
    header.base = base;
    {
      std::lock_guard lock(shared_->mutex);
      if (!shared_->segments.empty()) {
        header.has_prev = true;
        header.prev = shared_->segments.back().base;
      }
    }
    header.schema_count = static_cast<uint32_t>(schema_.messages().size());
    const std::string path = (std::filesystem::path(options_.dir) / SegmentName(base)).string();
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) return Error::Transient(Errno("cannot create", path));
    file_ = std::make_shared<FileHandle>(fd_, path);
    current_path_ = path;
    file_offset_ = 0;
    segment_transactions_ = 0;
    buffer_.clear();
    AppendRecord(buffer_, kSegmentHeader, base, SegmentHeaderPayload(header));
    for (const auto& [key, message] : schema_.messages())
      AppendRecord(buffer_, kSchema, message.lsn, message.bytes);
    if (Status status = FsyncPath(options_.dir, true); !status.ok()) return status;
    std::lock_guard lock(shared_->mutex);
    shared_->segments.push_back({base, path, 0});
    return Status::Ok();
  }

  Result<SegmentHeader> ReadHeader(Lsn base, const std::string& path) {
    SegmentFile file;
    if (Status status = file.Open(path); !status.ok()) return status.error();
    Record record;
    std::string error;
    const auto outcome = file.ReadRecord(UINT64_MAX, record, error);
    if (outcome != SegmentFile::Outcome::kRecord) {
      return Error::Corrupt("change log: segment " + path + " offset 0: " +
                            (error.empty() ? std::string("no segment header") : error));
    }
    auto header = ParseSegmentHeader(record);
    if (!header || header->base != base) {
      return Error::Corrupt("change log: segment " + path +
                            " offset 0: not a segment header for its name");
    }
    return *header;
  }

  // Reads the last segment whole; cuts a torn tail back to the last whole transaction.
  Result<ScanResult> ScanLast(Lsn base, const std::string& path) {
    ScanResult scan;
    scan.header.base = base;
    scan.last_position = base;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return Error::Transient(Errno("cannot stat", path));
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    SegmentFile file;
    if (Status status = file.Open(path); !status.ok()) return status.error();
    Record record;
    std::string error;
    bool header_seen = false;
    uint32_t schema_left = 0;
    uint32_t remaining = 0;
    Lsn position;
    std::vector<LogMessage> schema_in_txn;  // Relation/Type of the transaction being read
    bool in_stream = false;
    std::string torn;  // why the scan stopped before the end
    for (;;) {
      const uint64_t at = file.offset();
      const auto outcome = file.ReadRecord(size, record, error);
      if (outcome == SegmentFile::Outcome::kEnd) break;
      if (outcome == SegmentFile::Outcome::kShort) {
        torn = "the file ends inside a record at offset " + std::to_string(at);
        break;
      }
      if (outcome == SegmentFile::Outcome::kDamaged) {
        // Damage followed by a verified record is not a torn write: stop, never skip.
        if (VerifiedRecordFollows(path, at, size)) return Error::Corrupt("change log: " + error);
        torn = error;
        break;
      }
      if (!header_seen) {
        auto header = ParseSegmentHeader(record);
        if (!header || header->base != base) {
          torn = "no segment header at offset 0";
          break;
        }
        scan.header = *header;
        header_seen = true;
        schema_left = header->schema_count;
        if (schema_left == 0) {
          scan.preamble_whole = true;
          scan.good_end = record.end;
        }
        continue;
      }
      if (schema_left > 0) {
        if (record.kind != kSchema)
          return Error::Corrupt("change log: segment " + path + " offset " + std::to_string(at) +
                                ": a Relation/Type record expected");
        LogMessage message{record.lsn, std::string(record.payload)};
        bool plain = false;
        if (Status status = scan.schema.ObserveOne(message, plain); !status.ok())
          return status.error();
        if (--schema_left == 0) {
          scan.preamble_whole = true;
          scan.good_end = record.end;
        }
        continue;
      }
      if (remaining == 0) {
        if (record.kind != kTransaction || record.payload.size() != 4 ||
            GetLe32(record.payload.data()) == 0) {
          return Error::Corrupt("change log: segment " + path + " offset " + std::to_string(at) +
                                ": a transaction record expected");
        }
        remaining = GetLe32(record.payload.data());
        position = record.lsn;
        schema_in_txn.clear();
        in_stream = false;
        continue;
      }
      if (record.kind != kMessage) {
        return Error::Corrupt("change log: segment " + path + " offset " + std::to_string(at) +
                              ": a message record expected");
      }
      if (!record.payload.empty() && (record.payload[0] == 'S' || record.payload[0] == 'E' ||
                                      record.payload[0] == 'R' || record.payload[0] == 'Y')) {
        schema_in_txn.push_back({record.lsn, std::string(record.payload)});
      }
      if (--remaining == 0) {
        for (const LogMessage& message : schema_in_txn) {
          if (Status status = scan.schema.ObserveOne(message, in_stream); !status.ok())
            return status.error();
        }
        scan.good_end = record.end;
        scan.last_position = position;
        ++scan.transactions;
      }
    }
    if (!scan.preamble_whole) return scan;
    if (scan.good_end < size) {
      scan.cut = true;
      // Inside a transaction whose own record verified: that transaction is the first cut.
      if (remaining > 0) scan.cut_position = position;
      log_.Warn("change log: cutting a torn tail back to the last whole transaction",
                {{"file", path},
                 {"offset", std::to_string(scan.good_end)},
                 {"dropped_bytes", std::to_string(size - scan.good_end)},
                 {"reason", torn.empty() ? std::string("an unfinished transaction") : torn}});
      if (::truncate(path.c_str(), static_cast<off_t>(scan.good_end)) != 0) {
        return Error::Transient(Errno("cannot truncate", path));
      }
      if (Status status = FsyncPath(path, false); !status.ok()) return status.error();
    }
    return scan;
  }

  // Whether, past the damaged record at `at` (its length field taken as true), a whole
  // record verifies: then the damage is in the middle of the log, not a torn write.
  static bool VerifiedRecordFollows(const std::string& path, uint64_t at, uint64_t size) {
    char header[kRecordHeader];
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool got = ::pread(fd, header, kRecordHeader, static_cast<off_t>(at)) ==
                     static_cast<ssize_t>(kRecordHeader);
    ::close(fd);
    if (!got) return false;
    const uint64_t next = at + kRecordHeader + GetLe32(header);
    if (next >= size) return false;
    SegmentFile file;
    if (!file.Open(path, next).ok()) return false;
    Record record;
    std::string error;
    return file.ReadRecord(size, record, error) == SegmentFile::Outcome::kRecord;
  }

  SpoolOptions options_;
  Logger& log_;
  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
  // The writer's own state (one writer thread).
  int fd_ = -1;                       // file_'s, or -1
  std::shared_ptr<FileHandle> file_;  // the current segment's (shared with the syncer)
  std::string current_path_;
  std::string buffer_;
  uint64_t file_offset_ = 0;  // bytes written to the current segment's file
  uint64_t segment_transactions_ = 0;
  Lsn last_appended_;
  bool started_ = false;
  SchemaState schema_;  // Relation/Type messages in force after the last append
  std::optional<Error> broken_;
  Lsn cut_from_;  // set by Open (ChangeLogStats::cut_from)
  std::thread syncer_;
};

}  // namespace

Result<std::unique_ptr<ChangeLog>> OpenSegmentLog(const SpoolOptions& options, Logger& log) {
  auto segment_log = std::make_unique<SegmentLog>(options, log);
  if (Status status = segment_log->Open(); !status.ok()) return status.error();
  segment_log->StartSyncer();
  return std::unique_ptr<ChangeLog>(std::move(segment_log));
}

Status CheckLogDirectory(const std::string& dir) {
  namespace fs = std::filesystem;
  // The directory itself, or the nearest ancestor that exists: what Open would create
  // the log in.
  fs::path at = fs::path(dir).lexically_normal();
  fs::file_status status;
  for (;;) {
    std::error_code ec;
    status = fs::status(at, ec);
    if (ec && status.type() != fs::file_type::not_found) {
      return Error::Permanent("cannot reach " + at.string() + ": " + ec.message());
    }
    if (fs::exists(status) || !at.has_relative_path()) break;
    at = at.parent_path();
  }
  if (!fs::exists(status)) return Error::Permanent(at.string() + " does not exist");
  if (!fs::is_directory(status)) {
    return Error::Permanent(at.string() + " exists and is not a directory");
  }
  // AT_EACCESS: the effective user and groups, as Open's mkdir and open would be checked;
  // a read-only mount answers EROFS whatever the permissions.
  if (::faccessat(AT_FDCWD, at.c_str(), W_OK | X_OK, AT_EACCESS) != 0) {
    const int err = errno;
    return Error::Permanent(at.string() +
                            " is not writable by this process: " + std::strerror(err));
  }
  return Status();
}

namespace {

// The owner file's text without its line end ("" when it cannot be read).
std::string ReadOwner(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buffer[512];
  const ssize_t n = ::read(fd, buffer, sizeof buffer);
  ::close(fd);
  std::string text(buffer, n > 0 ? static_cast<size_t>(n) : 0);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

}  // namespace

Status CheckLogOwner(const std::string& dir, const std::string& owner) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status();  // created by the log (or refused before)
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (ParseSegmentName(name) && entry.is_regular_file(ec)) continue;
    if (name == kLogOwnerFile) {
      const std::string recorded = ReadOwner(entry.path());
      // Empty: written by a crash a moment before (it is written again).
      if (!recorded.empty() && recorded != owner) {
        return Error::Permanent(dir + " is the change log of " + recorded + ", not of " + owner +
                                ": each pipeline needs a spool.dir of its own");
      }
      continue;
    }
    return Error::Permanent(dir + " holds files that are not pgderive's change log (e.g. " + name +
                            "): spool.dir must be a directory of the log's own, since "
                            "pgderive removes the log's files in it");
  }
  if (ec) return Error::Permanent("cannot list " + dir + ": " + ec.message());
  return Status();
}

Status RemoveChangeLog(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status();
  std::vector<fs::path> ours;
  std::string other;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if ((ParseSegmentName(name) && entry.is_regular_file(ec)) || name == kLogOwnerFile) {
      ours.push_back(entry.path());
    } else if (other.empty()) {
      other = name;
    }
  }
  if (ec) return Error::Transient("cannot list " + dir + ": " + ec.message());
  for (const fs::path& path : ours) {
    fs::remove(path, ec);
    if (ec) return Error::Transient("cannot remove " + path.string() + ": " + ec.message());
  }
  if (!other.empty()) {
    return Error::Permanent("its files are removed, but " + dir + " holds other files (e.g. " +
                            other + "), left as they are");
  }
  fs::remove(dir, ec);
  if (ec) return Error::Transient("cannot remove " + dir + ": " + ec.message());
  return Status();
}

}  // namespace pgderive
