#include "pipeline/teardown.h"

#include <filesystem>

#include "cdc/sql_session.h"
#include "spool/segment_log.h"

namespace pgderive {
namespace {

// The source's part: the slot and the publication.
void TeardownSource(const Config& config, TeardownReport& report) {
  const std::string& slot = config.source.slot;
  const std::string& publication = config.source.publication;
  auto connected = SqlSession::Connect(config.source.dsn, "pgderive-teardown");
  if (!connected.ok()) {
    report.left.push_back("on the source: " + connected.error().message() + "; slot " + slot +
                          " and publication " + publication + " if they exist");
    return;
  }
  SqlSession& sql = connected.value();
  // An active slot (a `tail --slot` reading it) is refused by the server: left.
  auto dropped = sql.Query(
      "select pg_drop_replication_slot(slot_name)::text from pg_replication_slots where "
      "slot_name = $1",
      {slot});
  if (!dropped.ok()) {
    report.left.push_back("on the source: slot " + slot + ": " + dropped.error().message());
  } else if (!dropped.value().rows.empty()) {
    report.removed.push_back("from the source: slot " + slot);
  }
  auto present = sql.Query("select from pg_publication where pubname = $1", {publication});
  Status status = present.status();
  const bool own = publication == "pgderive_" + config.pipeline;
  if (status.ok() && !present.value().rows.empty() && !own) {
    report.kept.push_back("on the source: publication " + publication +
                          " (named in source.publication, so possibly made by hand and used "
                          "by others; drop it yourself if it is pgderive's alone)");
  } else if (status.ok() && !present.value().rows.empty()) {
    status = sql.Execute("drop publication if exists " + sql.QuoteIdentifier(publication));
    if (status.ok()) report.removed.push_back("from the source: publication " + publication);
  }
  if (!status.ok()) {
    report.left.push_back("on the source: publication " + publication + ": " +
                          status.error().message());
  }
}

}  // namespace

TeardownReport TeardownPipeline(const Config& config,
                                const std::vector<std::unique_ptr<Sink>>& sinks, bool views) {
  TeardownReport report;
  for (const auto& sink : sinks) {
    auto removed = sink->Teardown(views);
    if (!removed.ok()) {
      std::string data;
      if (views) {
        for (const auto& [view, tables] : sink->view_sources()) {
          data += (data.empty() ? "" : ", ") + view;
        }
        data = " and the data of view(s) " + data;
      }
      report.left.push_back("in store " + sink->name() + ": " + removed.error().message() +
                            "; what pgderive keeps there for pipeline " + config.pipeline +
                            " (checkpoint, views' states, metadata" + data + ") may be left");
      continue;
    }
    for (const std::string& item : removed.value()) {
      report.removed.push_back("from store " + sink->name() + ": " + item);
    }
  }
  TeardownSource(config, report);
  // The change log: without the slot it holds nothing a store can use.
  std::error_code ec;
  if (config.spool.enabled && std::filesystem::exists(config.spool.dir, ec)) {
    // Its segment and owner files only, and the directory once empty: never another
    // pipeline's log or files that are not the log's.
    Status owned = CheckLogOwner(config.spool.dir, ChangeLogOwner(config));
    Status removed = owned.ok() ? RemoveChangeLog(config.spool.dir) : owned;
    if (!removed.ok()) {
      report.left.push_back("the change log " + config.spool.dir + ": " +
                            removed.error().message());
    } else {
      report.removed.push_back("the change log " + config.spool.dir);
      // The default's parent (pgderive-spool/ beside the file) goes too once empty.
      const std::filesystem::path parent = std::filesystem::path(config.spool.dir).parent_path();
      if (parent.filename() == "pgderive-spool" && std::filesystem::is_empty(parent, ec)) {
        std::filesystem::remove(parent, ec);
      }
    }
  }
  return report;
}

}  // namespace pgderive
