#pragma once

// The change log on local disk: segment files in SpoolOptions::dir.
//
// Layout: one file per segment, named after the position it starts after (16 hex
// digits, e.g. 00000016B374D848.seg); a segment holds the transactions whose position
// is in (its name, the next segment's name]. Each file is a sequence of records
//
//   Int32 length | Int32 crc32c | Int8 kind | Int64 lsn | length bytes
//
// (little-endian; the CRC-32C covers kind, lsn and the bytes). A segment begins with a
// header record (its start position, the previous segment's start, how many
// Relation/Type records follow) and the Relation/Type messages in force at its start;
// then per transaction a header record (its position, its message count) and one record
// per pgoutput message. A new segment is begun when the current one passes
// segment_bytes.
//
// Durability: Append buffers; Write writes (once per batch) and readers see it at once;
// a syncer thread of the log fdatasyncs what is written (one covers every Write before
// it, at most every 10 ms unless a Sync waits) and only then moves Durable(). A segment
// is fsynced before the next one is created, and the directory when a segment is
// created or removed.
//
// Open (recovery): the last segment is read whole; a torn tail (a partial or
// unverifiable last transaction after a crash) is cut back to the end of the last whole
// transaction, with a warning naming the file, the offset and the bytes dropped. A
// checksum failure there followed by a record that verifies is damage, not a torn
// write: an error. (Damage to a length field near the end cannot be told from a torn
// write; the caller's comparison of Durable() with the slot's confirmed position finds
// what such a cut lost.) A missing segment in the sequence (each header names its
// predecessor) is an error naming the files. A checksum or framing failure in an
// earlier segment is found by the reader that reaches it, an error naming the file and
// the byte offset - never skipped.

#include <memory>
#include <string>

#include "base/log.h"
#include "spool/change_log.h"

namespace pgderive {

// Opens (creating it if missing) the log in options.dir. Errors: the directory cannot be
// created or read (transient), a missing segment or a damaged segment header
// (corrupt, naming the file and offset).
Result<std::unique_ptr<ChangeLog>> OpenSegmentLog(const SpoolOptions& options, Logger& log);

// Whether the log can live in `dir`, creating nothing: `dir` is a directory this process
// may write and enter, or does not exist yet and its nearest existing ancestor is one
// (so OpenSegmentLog can create it). Error (permanent): the message names the path that
// stands in the way and why (e.g. "/etc/pgderive is not writable by this process:
// Read-only file system").
Status CheckLogDirectory(const std::string& dir);

// The file in a log's directory that names its owner (SpoolOptions::owner).
inline constexpr const char* kLogOwnerFile = "pgderive-change-log";

// Whether `dir` may be `owner`'s log, reading only: it does not exist, or holds nothing
// but segment files and an owner file naming `owner` (or none: a log of an older
// pgderive). Error (permanent): it holds other files ("(e.g. precious.txt)": pgderive
// deletes what its log holds, so the directory must be the log's own), or another
// owner's log.
Status CheckLogOwner(const std::string& dir, const std::string& owner);

// Removes the log in `dir`: its segment files and owner file, then the directory when it
// is empty. Nothing else is ever deleted: a directory with other files in it stays
// (Error naming one of them).
Status RemoveChangeLog(const std::string& dir);

}  // namespace pgderive
