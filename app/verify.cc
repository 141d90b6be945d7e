#include "app/verify.h"

#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "app/backfill_command.h"
#include "app/sink_factory.h"
#include "base/redact.h"
#include "cdc/sql_session.h"
#include "cdc/type_catalog.h"
#include "config/config.h"
#include "sinks/common/view_compare.h"
#include "snapshot/snapshot_reader.h"

namespace pgderive {
namespace {

using Entries = ViewEntries;  // key -> JSON object

// The entries every view of `sink` must hold, from the source's rows.
class ExpectedEntries : public TypedSnapshotConsumer {
 public:
  ExpectedEntries(ViewInspector& inspector, TypeLearner& learner)
      : TypedSnapshotConsumer(learner), inspector_(inspector) {}

  std::map<std::string, Entries> by_view;
  std::map<std::string, std::vector<std::string>> duplicates;  // two rows, one key

 protected:
  Status OnTypedRows(const std::shared_ptr<const RelationSchema>& shared,
                     std::span<const TupleData> rows, const TypeRegistry& types) override {
    for (const std::string& view : inspector_.views()) {
      std::vector<ViewInspector::Entry> found;
      for (const TupleData& row : rows) {
        auto entry = inspector_.Expected(view, shared, row, types);
        if (!entry.ok()) return entry.error();
        if (entry.value()) found.push_back(std::move(*entry.value()));
      }
      std::lock_guard lock(mutex_);
      auto& entries = by_view[view];
      for (auto& [key, value] : found) {
        if (!entries.emplace(key, value).second) {
          duplicates[view].push_back(key);
        }
      }
    }
    return Status::Ok();
  }

 private:
  ViewInspector& inspector_;
  std::mutex mutex_;
};

// How many lines of differences verify prints for one view: a view far from its
// source (a store emptied by hand) would print one per row.
constexpr size_t kListedPerView = 100;

// Compares one view; appends its lines per difference to `report`. Returns the count.
// Reports, and returns the keys of, the differences whose key is in `before` (every
// difference when it is null: the first round). A key that differed in an earlier round
// and no longer does, or differs only now, was a write racing with verify.
std::set<std::string> Compare(const std::string& view, const Entries& expected,
                              const Entries& actual, std::vector<std::string>& report,
                              const std::set<std::string>* before) {
  std::set<std::string> keys;
  for (const EntryDifference& difference : CompareEntries(expected, actual)) {
    if (before != nullptr && !before->contains(difference.key)) continue;
    keys.insert(difference.key);
    for (std::string& line : DescribeDifference(view, difference))
      report.push_back(std::move(line));
  }
  return keys;
}

// Writes a marker into the WAL and waits until `sink`'s checkpoint has passed it.
Status WaitForCatchUp(SqlRunner& sql, Sink& sink, std::chrono::seconds wait) {
  auto marker = sql.Query("select pg_logical_emit_message(true, 'pgderive', 'verify')::text");
  if (!marker.ok()) return marker.error();
  const auto lsn = Lsn::Parse(marker.value().rows.at(0).at(0).value_or(""));
  if (!lsn) return Error::Corrupt("pg_logical_emit_message returned no LSN");
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::optional<Lsn> last;
  while (true) {
    auto checkpoint = sink.ReadCheckpoint();
    if (!checkpoint.ok()) return checkpoint.error();
    last = checkpoint.value();
    if (last && *last > *lsn) return Status::Ok();
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Error::Transient("store " + sink.name() + " has checkpoint " +
                          (last ? last->ToString() : std::string("none")) +
                          " and did not reach the source's " + lsn->ToString() + " within " +
                          std::to_string(wait.count()) + " s (is `pgderive run` running?)");
}

// The views of `sink` its store records as being backfilled (their rows are filled in
// chunks after their backfill's request: they differ until they are live).
std::set<std::string> Backfilling(Sink& sink) {
  std::set<std::string> out;
  auto states = sink.ReadViewStates();
  if (!states.ok() || !states.value()) return out;
  for (const auto& [view, tables] : sink.view_sources()) {
    auto it = states.value()->find(view);
    if (it != states.value()->end() && it->second.backfilling) out.insert(view);
  }
  return out;
}

// Waits until no view of `sink` is being backfilled, or until `deadline`; the views
// still being backfilled then.
std::set<std::string> WaitForLive(Sink& sink, std::chrono::steady_clock::time_point deadline) {
  while (true) {
    std::set<std::string> backfilling = Backfilling(sink);
    if (backfilling.empty() || std::chrono::steady_clock::now() >= deadline) return backfilling;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

namespace {

// One comparison of every view (of `options.view`); fills `differing_views` with the
// views that differed.
int CompareViews(const VerifyOptions& options, std::vector<std::string>& differing_views);

}  // namespace

int RunVerify(const VerifyOptions& options) {
  std::vector<std::string> differing;
  const int status = CompareViews(options, differing);
  if (status != 1 || !options.repair || differing.empty()) return status;
  for (const std::string& view : differing) {
    std::fprintf(options.out, "view %s: repairing it: refilling it from the source\n",
                 view.c_str());
    std::fflush(options.out);
    const int filled = RunBackfill({.config_path = options.config_path,
                                    .view = view,
                                    .wait = true,
                                    .timeout = std::chrono::seconds(0),
                                    .interval = std::chrono::milliseconds(5000),
                                    .out = options.out});
    if (filled != 0) {
      std::fprintf(options.out, "view %s: the refill did not complete; not repaired\n",
                   view.c_str());
      return 1;
    }
  }
  std::fprintf(options.out, "compared again after the repair:\n");
  VerifyOptions again = options;
  again.repair = false;
  std::vector<std::string> still;
  return CompareViews(again, still);
}

namespace {

int CompareViews(const VerifyOptions& options, std::vector<std::string>& differing_views) {
  const std::optional<Config> loaded = LoadConfigOrReport(options.config_path, stderr);
  if (!loaded) return 2;
  const Config& config = *loaded;
  if (options.view) {
    if (auto known = config.FindView(*options.view); !known.ok()) {
      std::fprintf(stderr, "pgderive verify: %s\n", known.error().message().c_str());
      return 2;
    }
  }
  auto fail = [](const std::string& message) {
    std::fprintf(stderr, "pgderive verify: %s\n", RedactSecrets(message).c_str());
    return 1;
  };
  auto stores = MakeInspectedStores(config, options.view);
  if (!stores.ok()) return fail(stores.error().message());
  auto sql = SqlSession::Connect(config.source.dsn, "pgderive-verify");
  if (!sql.ok()) return fail(sql.error().message());

  size_t total_differences = 0;
  for (auto& [sink, inspector] : stores.value()) {
    Status status = sink->Resolve(sql.value());
    if (status.ok()) status = sink->Connect();
    if (!status.ok()) return fail("store " + sink->name() + ": " + status.error().message());
    std::vector<std::string> report;
    std::map<std::string, size_t> rows, differences;
    // Views being backfilled while a round compared them (before or after reading them).
    std::set<std::string> backfilling;
    // The keys that differed in every round so far, per view.
    std::map<std::string, std::set<std::string>> differing;
    for (int round = 1; round <= std::max(options.rounds, 1); ++round) {
      const auto deadline = std::chrono::steady_clock::now() + options.wait;
      status = WaitForCatchUp(sql.value(), *sink, options.wait);
      if (!status.ok()) return fail(status.error().message());
      // A backfill requested before the marker has emptied its view there and fills it
      // in chunks after it: compare the view once it is live (a store that still said
      // live before catching up had not met the request yet).
      backfilling = WaitForLive(*sink, deadline);
      // The source, in one snapshot: views defined by a query run it there; the others
      // are made row by row from the snapshot's parallel reader.
      auto reader_connection = SqlSession::Connect(config.source.dsn, "pgderive-verify");
      if (!reader_connection.ok()) return fail(reader_connection.error().message());
      auto begun = reader_connection.value().Begin(SqlSession::Isolation::kRepeatableRead,
                                                   SqlSession::Access::kReadOnly);
      if (!begun.ok()) return fail(begun.error().message());
      SqlSession::Transaction& rc = begun.value();
      auto exported = rc.Query("select pg_export_snapshot()");
      if (!exported.ok()) return fail(exported.error().message());
      std::map<std::string, Entries> expected;
      bool row_views = false;
      for (const std::string& view : inspector->views()) {
        auto computed = inspector->ExpectedFromSource(view, rc);
        if (!computed.ok()) return fail(computed.error().message());
        if (!computed.value()) {
          row_views = true;
          continue;
        }
        for (auto& [key, value] : *computed.value()) expected[view].emplace(key, value);
      }
      TypeLearner learner(sql.value());
      ExpectedEntries from_rows(*inspector, learner);
      if (row_views) {
        auto reader = SnapshotReader::Open({.dsn = config.source.dsn,
                                            .snapshot_name = *exported.value().rows[0][0],
                                            .tables = sink->tables(),
                                            .workers = config.snapshot.workers});
        if (!reader.ok()) return fail(reader.error().message());
        status = reader.value()->Run(from_rows);
        if (!status.ok()) return fail(status.error().message());
        for (auto& [view, entries] : from_rows.by_view) expected[view].merge(entries);
      }
      IgnoreError(rc.Commit(), "a read-only transaction");

      report.clear();
      bool clean = true;
      for (const std::string& view : inspector->views()) {
        auto stored = inspector->ReadView(view);
        if (!stored.ok()) return fail(stored.error().message());
        Entries actual;
        for (auto& [key, value] : stored.value()) actual.emplace(std::move(key), std::move(value));
        const Entries& want = expected[view];
        rows[view] = want.size();
        const auto before = differing.find(view);
        std::set<std::string> keys =
            Compare(view, want, actual, report,
                    round == 1 || before == differing.end() ? nullptr : &before->second);
        differences[view] = keys.size();
        differing[view] = std::move(keys);
        for (const std::string& key : from_rows.duplicates[view]) {
          report.push_back("view " + view + ": two source rows make the key " + key);
          ++differences[view];
        }
        clean = clean && differences[view] == 0;
      }
      // A backfill that started while the views were read (its request after the
      // marker) makes what was read a mix of before and after: not a verdict.
      backfilling.merge(Backfilling(*sink));
      if (clean) break;
    }
    // The first kListedPerView lines of each view; the counts below stay whole.
    std::map<std::string, size_t> listed, unlisted;
    for (const std::string& line : report) {
      const std::string view = line.substr(5, line.find(": ") - 5);  // "view V: ..."
      if (++listed[view] > kListedPerView) {
        ++unlisted[view];
        continue;
      }
      std::fprintf(options.out, "%s\n", line.c_str());
    }
    for (const auto& [view, count] : unlisted) {
      std::fprintf(options.out,
                   "view %s: %zu more difference line%s not listed (the first %zu are)\n",
                   view.c_str(), count, count == 1 ? "" : "s", kListedPerView);
    }
    for (const auto& [view, count] : differences) {
      std::fprintf(
          options.out, "view %s (store %s): %zu rows, %s\n", view.c_str(), sink->name().c_str(),
          rows[view],
          count == 0
              ? "consistent"
              : (std::to_string(count) + (count == 1 ? " difference" : " differences")).c_str());
      total_differences += count;
      if (count > 0) differing_views.push_back(view);
    }
    // A view being backfilled differs until its last chunk is in: say so.
    for (const auto& [view, count] : differences) {
      if (count == 0 || !backfilling.contains(view)) continue;
      std::fprintf(options.out,
                   "view %s was being backfilled while it was compared (for longer than "
                   "--wait %lld s): rows not filled yet differ until it is live\n",
                   view.c_str(), static_cast<long long>(options.wait.count()));
    }
  }
  std::fflush(options.out);
  return total_differences == 0 ? 0 : 1;
}

}  // namespace
}  // namespace pgderive
