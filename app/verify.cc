#include "app/verify.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "app/backfill_command.h"
#include "app/sink_factory.h"
#include "base/redact.h"
#include "base/retry.h"
#include "cdc/sql_session.h"
#include "cdc/type_catalog.h"
#include "config/config.h"
#include "sinks/common/view_audit.h"

namespace pgderive {
namespace {

// How many lines of differences verify prints for one view: a view far from its
// source (a store emptied by hand) would print one per row.
constexpr size_t kListedPerView = 100;

// This process's peak resident memory in MiB (VmHWM of /proc/self/status; 0 when it
// cannot be read).
double PeakMemoryMiB() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("VmHWM:")) {
      return static_cast<double>(std::strtoull(line.c_str() + 6, nullptr, 10)) / 1024.0;
    }
  }
  return 0;
}

// Writes a marker into the WAL and waits until each of `sinks`' checkpoints has passed
// it, all within `wait`: the stores that did not, each with why. A store that answers
// with a transient error (a shard still recovering, a restart) is asked again until
// `wait` passes; then its last error is why.
std::map<Sink*, Error> WaitForCatchUp(SqlRunner& sql, const std::vector<Sink*>& sinks,
                                      std::chrono::seconds wait) {
  std::map<Sink*, Error> failed;
  auto marker = sql.Query("select pg_logical_emit_message(true, 'pgderive', 'verify')::text");
  const auto lsn =
      marker.ok() ? Lsn::Parse(marker.value().rows.at(0).at(0).value_or("")) : std::optional<Lsn>();
  if (!lsn) {
    for (Sink* sink : sinks) {
      failed.emplace(sink, marker.ok() ? Error::Corrupt("pg_logical_emit_message returned no LSN")
                                       : marker.error());
    }
    return failed;
  }
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::map<Sink*, std::optional<Lsn>> waiting;
  std::map<Sink*, Error> errors;  // the last transient error of a store still waited for
  for (Sink* sink : sinks) waiting.emplace(sink, std::nullopt);
  while (true) {
    for (auto it = waiting.begin(); it != waiting.end();) {
      auto checkpoint = it->first->ReadCheckpoint();
      if (!checkpoint.ok()) {
        if (checkpoint.error().kind() == ErrorKind::kTransient &&
            std::chrono::steady_clock::now() < deadline) {
          errors.insert_or_assign(it->first, checkpoint.error());
          ++it;
          continue;
        }
        failed.emplace(it->first, checkpoint.error());
        it = waiting.erase(it);
        continue;
      }
      errors.erase(it->first);
      it->second = checkpoint.value();
      it = it->second && *it->second > *lsn ? waiting.erase(it) : std::next(it);
    }
    if (waiting.empty() || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (const auto& [sink, last] : waiting) {
    if (auto error = errors.find(sink); error != errors.end()) {
      failed.emplace(sink, error->second);
      continue;
    }
    failed.emplace(
        sink, Error::Transient("store " + sink->name() + " has checkpoint " +
                               (last ? last->ToString() : std::string("none")) +
                               " and did not reach the source's " + lsn->ToString() + " within " +
                               std::to_string(wait.count()) + " s (is `pgderive run` running?)"));
  }
  return failed;
}

Status WaitForCatchUp(SqlRunner& sql, Sink& sink, std::chrono::seconds wait) {
  auto failed = WaitForCatchUp(sql, std::vector<Sink*>{&sink}, wait);
  if (failed.empty()) return Status::Ok();
  return failed.begin()->second;
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
  TypeLearner learner(sql.value());

  size_t total_differences = 0;
  uint64_t total_rows = 0;
  const auto started = std::chrono::steady_clock::now();
  // One store: its views compared and printed. An error (the store down, a query
  // refused) is that store's: the other stores are still compared.
  auto compare_store = [&](Sink* sink, ViewInspector* inspector) -> Status {
    const auto deadline = std::chrono::steady_clock::now() + options.wait;
    Status status = WaitForCatchUp(sql.value(), *sink, options.wait);
    if (!status.ok()) return Error::Transient(status.error().message());
    // A backfill requested before the marker has emptied its view there and fills it in
    // chunks after it: compare the view once it is live (a store that still said live
    // before catching up had not met the request yet).
    std::set<std::string> backfilling = WaitForLive(*sink, deadline);
    // Chunk by chunk (sinks/common/view_audit.h): what differs is read again after the
    // store caught up again, up to `rounds` reads; what differs every time is reported.
    const AuditOptions audit_options{
        .rounds = std::max(options.rounds, 1),
        .catch_up = [&] { return WaitForCatchUp(sql.value(), *sink, options.wait); },
        .listed = kListedPerView};
    std::map<std::string, std::vector<std::string>> tables;
    for (auto& [view, from] : sink->view_sources()) tables[view] = from;
    std::map<std::string, ViewAudit> audits;
    std::optional<SqlSession> store_sql;  // the store's own database (the digest path)
    for (const std::string& view : inspector->views()) {
      auto source_entries = inspector->EntriesSql(view, ViewInspector::EntriesOf::kSource);
      if (!source_entries.ok()) return Error::Transient(source_entries.error().message());
      Result<ViewAudit> audit = Error::Permanent("view " + view + " reads no table");
      if (source_entries.value()) {
        auto store_entries = inspector->EntriesSql(view, ViewInspector::EntriesOf::kStore);
        if (!store_entries.ok()) return Error::Transient(store_entries.error().message());
        if (!store_sql) {
          auto connected = SqlSession::Connect(inspector->store_dsn(), "pgderive-verify");
          if (!connected.ok()) {
            return Error::Transient("store " + sink->name() + ": " + connected.error().message());
          }
          store_sql.emplace(std::move(connected).value());
        }
        audit = AuditDigestView(sql.value(), *source_entries.value(), *store_sql,
                                store_entries.value().value_or(
                                    "select null::text k, null::text e, null::text d where false"),
                                view, audit_options);
      } else if (auto it = tables.find(view); it != tables.end() && !it->second.empty()) {
        audit =
            AuditRowView(sql.value(), learner, *inspector, view, it->second.front(), audit_options);
      }
      if (!audit.ok()) return Error::Transient(audit.error().message());
      audits[view] = std::move(audit).value();
    }
    // A backfill that started while the views were read (its request after the marker)
    // makes what was read a mix of before and after: not a verdict.
    backfilling.merge(Backfilling(*sink));
    // The first kListedPerView lines of each view; the counts below stay whole.
    for (const auto& [view, audit] : audits) {
      for (const std::string& line : audit.lines) std::fprintf(options.out, "%s\n", line.c_str());
      if (audit.unlisted > 0) {
        std::fprintf(options.out,
                     "view %s: %llu more difference line%s not listed (the first %zu are)\n",
                     view.c_str(), static_cast<unsigned long long>(audit.unlisted),
                     audit.unlisted == 1 ? "" : "s", kListedPerView);
      }
    }
    for (const auto& [view, audit] : audits) {
      const uint64_t count = audit.differences;
      const double rate =
          audit.seconds > 0 ? static_cast<double>(audit.entries) / audit.seconds : 0.0;
      std::string how = audit.digest
                            ? "digests of " + std::to_string(audit.buckets) + " buckets, " +
                                  std::to_string(audit.buckets_read) + " read"
                            : std::to_string(audit.store_keys) + " store keys walked";
      std::fprintf(
          options.out, "view %s (store %s): %llu rows, %s (compared in %.1f s, %.0f rows/s; %s)\n",
          view.c_str(), sink->name().c_str(), static_cast<unsigned long long>(audit.entries),
          count == 0
              ? "consistent"
              : (std::to_string(count) + (count == 1 ? " difference" : " differences")).c_str(),
          audit.seconds, rate, how.c_str());
      total_differences += count;
      total_rows += audit.entries;
      if (count > 0) differing_views.push_back(view);
    }
    // A view being backfilled differs until its last chunk is in: say so.
    for (const auto& [view, audit] : audits) {
      if (audit.differences == 0 || !backfilling.contains(view)) continue;
      std::fprintf(options.out,
                   "view %s was being backfilled while it was compared (for longer than "
                   "--wait %lld s): rows not filled yet differ until it is live\n",
                   view.c_str(), static_cast<long long>(options.wait.count()));
    }
    return Status::Ok();
  };
  size_t stores_failed = 0;
  auto not_compared = [&](Sink* sink, const std::string& message) {
    ++stores_failed;
    fail((message.starts_with("store ") ? "" : "store " + sink->name() + ": ") + message +
         " (its views were not compared)");
  };
  // Every store connected, and caught up with the source once, all within one --wait (a
  // pipeline that does not run costs one wait, not one per store).
  std::vector<Sink*> connected;
  for (auto& [sink, inspector] : stores.value()) {
    Status status = sink->Resolve(sql.value());
    // A transient error (a shard still recovering) is tried again for a second: a store
    // that stays unreachable is reported then.
    if (status.ok()) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      status = RetryTransient([&] { return sink->Connect(); },
                              [&] { return std::chrono::steady_clock::now() >= until; },
                              [](const std::string&) {});
    }
    if (status.ok()) {
      connected.push_back(sink.get());
    } else {
      not_compared(sink.get(), status.error().message());
    }
  }
  const std::map<Sink*, Error> behind = WaitForCatchUp(sql.value(), connected, options.wait);
  for (auto& [sink, inspector] : stores.value()) {
    if (std::find(connected.begin(), connected.end(), sink.get()) == connected.end()) continue;
    if (auto it = behind.find(sink.get()); it != behind.end()) {
      not_compared(sink.get(), it->second.message());
      continue;
    }
    Status compared = compare_store(sink.get(), inspector);
    if (compared.ok()) continue;
    not_compared(sink.get(), compared.error().message());
  }
  // The rate and the memory it took: the views are compared chunk by chunk, so the
  // memory does not grow with them.
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::fprintf(options.out, "compared %llu rows in %.1f s (%.0f rows/s), peak memory %.0f MiB\n",
               static_cast<unsigned long long>(total_rows), seconds,
               seconds > 0 ? static_cast<double>(total_rows) / seconds : 0.0, PeakMemoryMiB());
  std::fflush(options.out);
  return total_differences == 0 && stores_failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace pgderive
