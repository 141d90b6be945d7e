#pragma once

// A view compared with its source chunk by chunk, in bounded memory: `pgderive verify`
// (app/verify.h) and the background verifier's check of a postgres view against its
// mirrors (pipeline/verify_hooks.h). Two paths, by what the view is:
//
//   the row path    a view made row by row (Redis, OpenSearch: ViewInspector::Expected).
//                   The source table in key order, `chunk_rows` rows at a time (the key
//                   the backfill follows, snapshot/key_range.h); the entries they make
//                   against what the store holds under those keys (ReadEntries). Then
//                   the store's keys, page by page (ScanKeys): a key whose row does not
//                   exist in the source is extra.
//   the digest path a view whose entries both sides compute in SQL (a postgres view:
//                   ViewInspector::EntriesSql). The entries are split into buckets by a
//                   hash of their key (about `bucket_entries` each); each bucket's count
//                   and md5 digest are computed by each side's database, and only the
//                   buckets whose digests differ are read, `fetch_entries` at a time,
//                   and compared entry by entry.
//
// What pgderive holds at once is one chunk, one page, or one batch of buckets (and the
// buckets' digests, 48 bytes each): the memory does not grow with the view.
//
// The two sides are read at different moments, so a write racing with the comparison
// can make an entry differ once. A chunk (or batch of buckets, or page of extra keys)
// that differs is read again after `catch_up` (the store has applied what the source
// had then), up to `rounds` reads in all; a key is a difference when it differed in
// every read.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cdc/sql_session.h"
#include "cdc/type_catalog.h"
#include "sinks/common/view_compare.h"
#include "sinks/common/view_inspector.h"

namespace pgderive {

struct AuditOptions {
  size_t chunk_rows = 5000;               // row path: source rows per chunk, store keys per page
  size_t bucket_entries = 1000;           // digest path: entries per bucket, about
  size_t fetch_entries = 50000;           // digest path: entries read from each side at once, about
  int rounds = 3;                         // reads of what differs, in all (1: no second read)
  std::function<Status()> catch_up = {};  // before each read again; unset: none
  size_t listed = 100;                    // difference lines kept per view
};

struct ViewAudit {
  uint64_t entries = 0;      // the entries the source makes
  uint64_t store_keys = 0;   // row path: the store's keys walked for extra entries
  uint64_t differences = 0;  // keys that differed in every read
  // The lines of the first differences (DescribeDifference), up to `listed` of them;
  // `unlisted` counts the lines left out.
  std::vector<std::string> lines;
  uint64_t unlisted = 0;
  std::vector<EntryDifference> found;  // the first `listed` differences
  bool digest = false;                 // compared on the digest path
  uint64_t buckets = 0;                // digest path: buckets compared
  uint64_t buckets_read = 0;           // digest path: buckets whose digests differed (read)
  double seconds = 0;                  // the comparison's wall time
};

// The row path for `view`, made from the rows of source table `table`. `types` learns
// the table's types on `source`. Errors: the source's or the store's, or a table
// without a key to read it by (KeyColumns).
Result<ViewAudit> AuditRowView(SqlSession& source, TypeLearner& types, ViewInspector& inspector,
                               const std::string& view, const std::string& table,
                               const AuditOptions& options);

// The digest path for `view`: `source_sql` run on `source` against `store_sql` run on
// `store` (each a SELECT of `k`, `e` and `d` text columns: EntriesSql). The two may be
// one session (the store's mirrors and table in one snapshot); when they are not, the
// two sides' digests are computed at once, each on its own session.
Result<ViewAudit> AuditDigestView(SqlRunner& source, const std::string& source_sql,
                                  SqlRunner& store, const std::string& store_sql,
                                  const std::string& view, const AuditOptions& options);

}  // namespace pgderive
