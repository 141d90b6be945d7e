#include "pipeline/verify_hooks.h"

#include <set>
#include <utility>

#include "sinks/common/view_audit.h"
#include "sinks/common/view_compare.h"
#include "sinks/common/view_inspector.h"

namespace pgderive {
namespace {

// The worker of `store`; null when there is none.
PipelineWorker* WorkerOf(const std::vector<std::unique_ptr<PipelineWorker>>& workers,
                         const std::string& store) {
  for (const auto& worker : workers) {
    if (worker->sink().name() == store) return worker.get();
  }
  return nullptr;
}

// The store's inspector: Redis and OpenSearch sinks read their own entries.
ViewInspector* InspectorOf(const std::vector<std::unique_ptr<PipelineWorker>>& workers,
                           const std::string& store) {
  PipelineWorker* worker = WorkerOf(workers, store);
  return worker == nullptr ? nullptr : dynamic_cast<ViewInspector*>(&worker->sink());
}

}  // namespace

ContinuousVerifyOptions MakeContinuousVerifyOptions(
    const Config& config, const std::vector<std::unique_ptr<PipelineWorker>>& workers,
    Logger& log) {
  ContinuousVerifyOptions options{.continuous = config.verify.continuous,
                                  .rows_per_second = config.verify.rows_per_second,
                                  .repair = config.verify.repair,
                                  .hooks = {}};
  const auto* all = &workers;
  options.hooks.held = [all](const std::string& store, const std::string& view,
                             const std::shared_ptr<const RelationSchema>& schema,
                             const ChunkRows& rows,
                             const TypeRegistry& types) -> Result<ViewEntries> {
    ViewInspector* inspector = InspectorOf(*all, store);
    if (inspector == nullptr) return Error::Permanent("store " + store + " cannot be read back");
    auto expected = EntriesOfRows(*inspector, view, schema, rows, types);
    if (!expected.ok()) return expected.error();
    std::vector<std::string> keys;
    keys.reserve(expected.value().size());
    for (const auto& [key, value] : expected.value()) keys.push_back(key);
    auto entries = inspector->ReadEntries(view, keys);
    if (!entries.ok()) return entries.error();
    ViewEntries held;
    for (auto& [key, value] : entries.value()) held.emplace(std::move(key), std::move(value));
    return held;
  };
  options.hooks.check = [all, &log](const std::string& store, const std::string& view,
                                    const std::shared_ptr<const RelationSchema>& schema,
                                    const ChunkRows& comparable, const ViewEntries& held,
                                    Lsn checked, const TypeRegistry& types) -> Result<size_t> {
    ViewInspector* inspector = InspectorOf(*all, store);
    if (inspector == nullptr) return Error::Permanent("store " + store + " cannot be read back");
    auto differences = CheckChunk(*inspector, view, schema, comparable, held, types);
    if (!differences.ok()) return differences.error();
    for (const EntryDifference& difference : differences.value()) {
      std::string detail;
      for (const std::string& line : DescribeDifference(view, difference)) {
        detail += (detail.empty() ? "" : "; ") + line;
      }
      log.Warn("verify found view " + view + " differing from its source at key " + difference.key +
                   ": " + SummarizeDifference(difference),
               {{"store", store},
                {"view", view},
                {"key", difference.key},
                {"difference", detail},
                {"lsn", checked.ToString()}});
    }
    return differences.value().size();
  };
  options.hooks.scan =
      [all](
          const std::string& store, const std::string& view, const std::string& cursor,
          size_t count) -> Result<std::optional<std::pair<std::vector<std::string>, std::string>>> {
    ViewInspector* inspector = InspectorOf(*all, store);
    if (inspector == nullptr) return Error::Permanent("store " + store + " cannot be read back");
    auto page = inspector->ScanKeys(view, cursor, count);
    if (!page.ok()) return page.error();
    if (!page.value()) return std::optional<std::pair<std::vector<std::string>, std::string>>();
    return std::optional<std::pair<std::vector<std::string>, std::string>>(
        std::pair{std::move(page.value()->keys), std::move(page.value()->cursor)});
  };
  options.hooks.row_keys =
      [all](const std::string& store, const std::string& view, const RelationSchema& schema,
            const std::string& key) -> Result<std::vector<std::vector<std::string>>> {
    ViewInspector* inspector = InspectorOf(*all, store);
    if (inspector == nullptr) return Error::Permanent("store " + store + " cannot be read back");
    return inspector->RowKeys(view, schema, key);
  };
  // The views compared: Redis and OpenSearch ones chunk by chunk against the source; a
  // postgres store's views whole, by their store, against their queries over its mirrors
  // (not the mirrors themselves, which the backfill also knows as views).
  std::set<std::pair<std::string, std::string>> compared;
  for (const ViewConfig& view : config.views) {
    auto store = config.stores.find(view.store);
    if (store == config.stores.end()) continue;
    if (store->second.type == StoreType::kRedis || store->second.type == StoreType::kOpenSearch) {
      compared.emplace(view.store, view.name);
    } else if (store->second.type == StoreType::kPostgres) {
      compared.emplace(view.store, view.name);
      options.hooks.store_checked.emplace_back(view.store, view.name);
    }
  }
  // One session per postgres store, on the verifier's thread only; dropped on an error.
  auto sessions = std::make_shared<std::map<std::string, SqlSession>>();
  options.hooks.store_check =
      [all, sessions](const std::string& store,
                      const std::string& view) -> Result<std::optional<VerifyHooks::StoreCheck>> {
    using Checked = std::optional<VerifyHooks::StoreCheck>;
    PipelineWorker* worker = WorkerOf(*all, store);
    ViewInspector* inspector = InspectorOf(*all, store);
    if (worker == nullptr || inspector == nullptr) {
      return Error::Permanent("store " + store + " cannot be read back");
    }
    auto mirrors = inspector->EntriesSql(view, ViewInspector::EntriesOf::kMirrors);
    if (!mirrors.ok()) return mirrors.error();
    if (!mirrors.value()) return Checked();  // not maintained now
    auto table = inspector->EntriesSql(view, ViewInspector::EntriesOf::kStore);
    if (!table.ok()) return table.error();
    if (!table.value()) return Checked();
    auto it = sessions->find(store);
    if (it == sessions->end()) {
      auto connected = SqlSession::Connect(inspector->store_dsn(), "pgderive-verify");
      if (!connected.ok()) return connected.error();
      it = sessions->emplace(store, std::move(connected).value()).first;
    }
    // The table and the mirrors in one snapshot: a batch changes both in one transaction.
    const Lsn at = worker->checkpoint();
    Result<ViewAudit> audit = Error::Transient("not compared");
    {
      auto begun =
          it->second.Begin(SqlSession::Isolation::kRepeatableRead, SqlSession::Access::kReadOnly);
      if (!begun.ok()) {
        sessions->erase(it);
        return begun.error();
      }
      audit = AuditDigestView(begun.value(), *mirrors.value(), begun.value(), *table.value(), view,
                              {.rounds = 1, .listed = 10000});
      if (audit.ok()) IgnoreError(begun.value().Commit(), "a read-only transaction");
    }
    if (!audit.ok()) {
      sessions->erase(store);
      return audit.error();
    }
    // A mirror began filling meanwhile (emptied, the view not maintained until it is
    // filled): what was compared is not a verdict.
    auto still = inspector->EntriesSql(view, ViewInspector::EntriesOf::kMirrors);
    if (!still.ok()) return still.error();
    if (!still.value() || *still.value() != *mirrors.value()) return Checked();
    VerifyHooks::StoreCheck out{.entries = audit.value().entries, .differing = {}, .at = at};
    for (const EntryDifference& difference : audit.value().found) {
      std::string detail;
      for (const std::string& line : DescribeDifference(view, difference)) {
        detail += (detail.empty() ? "" : "; ") + line;
      }
      // As the walk of a row view's store keys says it.
      const std::string summary = difference.kind == EntryDifference::Kind::kExtra
                                      ? "extra (no such row in the source)"
                                      : SummarizeDifference(difference);
      out.differing.push_back({difference.key, summary, detail});
    }
    return Checked(std::move(out));
  };
  options.hooks.store_repair = [all](const std::string& store, const std::string& view,
                                     const std::vector<std::string>& keys) -> Status {
    ViewInspector* inspector = InspectorOf(*all, store);
    if (inspector == nullptr) return Error::Permanent("store " + store + " cannot be read back");
    return inspector->RepairEntries(view, keys);
  };
  options.hooks.ready = [all, compared](const std::string& store, const std::string& view) {
    if (!compared.contains({store, view})) return false;
    PipelineWorker* worker = WorkerOf(*all, store);
    if (worker == nullptr || worker->failed() || worker->detached()) return false;
    for (const auto& [name, reason] : worker->sink().failed_views()) {
      if (name == view) return false;
    }
    return InspectorOf(*all, store) != nullptr;
  };
  return options;
}

}  // namespace pgderive
