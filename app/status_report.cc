#include "app/status_report.h"

#include <nlohmann/json.hpp>

#include "app/sink_factory.h"
#include "base/number.h"
#include "base/redact.h"
#include "cdc/sql_session.h"
#include "config/config.h"
#include "config/grammar.h"
#include "sinks/opensearch/http_client.h"

namespace pgderive {
namespace {

// The running pipeline's own view of itself, or null when nothing answers.
nlohmann::json LiveStatus(const std::string& listen) {
  auto client = HttpClient::Create(
      {.url = "http://" + listen, .ca_file = "", .timeout = std::chrono::seconds(3)});
  if (!client.ok()) return nullptr;
  auto response = client.value().Send("GET", "/status");
  if (!response.ok() || response.value().status != 200) return nullptr;
  auto parsed = nlohmann::json::parse(response.value().body, nullptr, false);
  return parsed.is_discarded() ? nlohmann::json(nullptr) : parsed;
}

std::string Text(const nlohmann::json& j, const char* key, const std::string& fallback = "-") {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

}  // namespace

int RunStatus(const StatusOptions& options) {
  const std::optional<Config> loaded = LoadConfigOrReport(options.config_path, stderr);
  if (!loaded) return 2;
  const Config& config = *loaded;
  auto fail = [&](const std::string& message) {
    std::fprintf(stderr, "pgderive status: %s\n", RedactSecrets(message).c_str());
    return 1;
  };
  auto sql = SqlSession::Connect(config.source.dsn, "pgderive-status");
  if (!sql.ok()) return fail("source: " + sql.error().message());
  SqlSession& c = sql.value();
  auto head = c.Query("select pg_current_wal_lsn()");
  if (!head.ok()) return fail("source: " + head.error().message());
  const Lsn current = Lsn::Parse(head.value().rows[0][0].value_or("")).value_or(Lsn{});

  nlohmann::json report = {{"pipeline", config.pipeline}, {"source_wal_lsn", current.ToString()}};
  auto slot = c.Query(
      "select active, confirmed_flush_lsn, restart_lsn, wal_status, safe_wal_size, "
      "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
      "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
      "from pg_replication_slots where slot_name = " +
      c.QuoteLiteral(config.source.slot));
  if (!slot.ok()) return fail("source: " + slot.error().message());
  if (slot.value().rows.empty()) {
    report["slot"] = {{"name", config.source.slot}, {"exists", false}};
  } else {
    const auto& row = slot.value().rows[0];
    report["slot"] = {{"name", config.source.slot},
                      {"exists", true},
                      {"active", row[0].value_or("") == "t"},
                      {"confirmed_flush_lsn", row[1].value_or("")},
                      {"restart_lsn", row[2].value_or("")},
                      {"wal_status", row[3].value_or("")},
                      {"safe_wal_size", nullptr},
                      {"retained_wal_bytes", 0},
                      {"lag_bytes", 0}};
    // A number the server did not write as one stays out of the report (null / 0).
    if (auto safe = ParseServerNumber<int64_t>(row[4]); safe.ok() && row[4]) {
      report["slot"]["safe_wal_size"] = safe.value();
    }
    if (auto retained = ParseServerNumber<int64_t>(row[5]); retained.ok()) {
      report["slot"]["retained_wal_bytes"] = retained.value();
    }
    if (auto lag = ParseServerNumber<int64_t>(row[6]); lag.ok()) {
      report["slot"]["lag_bytes"] = lag.value();
    }
  }

  const nlohmann::json live = LiveStatus(config.http.listen);
  report["running"] = !live.is_null();
  std::map<std::string, nlohmann::json> live_stores;
  if (!live.is_null() && live.contains("stores")) {
    for (const auto& s : live["stores"]) live_stores[s.value("name", "")] = s;
  }
  nlohmann::json stores = nlohmann::json::array();
  auto made = MakeSinks(config);
  if (!made.ok()) return fail(made.error().message());
  std::map<std::string, ViewState> recorded;  // view -> the state its store records
  for (auto& sink : made.value()) {
    nlohmann::json store = {{"name", sink->name()}};
    Status status = sink->Resolve(c, /*checked=*/true);
    if (status.ok()) status = sink->Connect();
    Result<std::optional<Lsn>> checkpoint =
        status.ok() ? sink->ReadCheckpoint() : Result<std::optional<Lsn>>(status.error());
    if (!checkpoint.ok()) {
      store["error"] = RedactSecrets(checkpoint.error().message());
    } else if (!checkpoint.value()) {
      store["checkpoint"] = nullptr;
    } else {
      const Lsn lsn = *checkpoint.value();
      store["checkpoint"] = lsn.ToString();
      store["lag_bytes"] = current > lsn ? current.value - lsn.value : 0;
    }
    if (checkpoint.ok()) {
      auto states = sink->ReadViewStates();
      if (states.ok() && states.value()) {
        for (auto& [view, state] : *states.value()) recorded[view] = state;
      }
    }
    if (auto it = live_stores.find(sink->name()); it != live_stores.end()) {
      store["lag_seconds"] = it->second.value("lag_seconds", 0.0);
      store["reachable"] = it->second.value("reachable", false);
      store["detached"] = it->second.value("detached", false);
      if (it->second.contains("spool_behind_bytes")) {
        store["spool_behind_bytes"] = it->second["spool_behind_bytes"];
      }
      if (it->second.contains("evicted")) store["evicted"] = it->second["evicted"];
    }
    stores.push_back(store);
  }
  report["stores"] = stores;
  // The slot is as far behind in time as its slowest store (known while running).
  if (!live.is_null() && report["slot"].value("exists", false)) {
    double slowest = 0;
    for (const auto& store : stores) slowest = std::max(slowest, store.value("lag_seconds", 0.0));
    report["slot"]["lag_seconds"] = slowest;
  }
  nlohmann::json views = nlohmann::json::array();
  if (!live.is_null() && live.contains("views")) {
    views = live["views"];
  } else {
    // Not running: what each store records (a backfill resumes where it stopped).
    for (const ViewConfig& v : config.views) {
      nlohmann::json view = {{"name", v.name}, {"store", v.store}, {"state", "stopped"}};
      if (auto it = recorded.find(v.name); it != recorded.end()) {
        view["recorded_state"] = it->second.removed       ? "removed"
                                 : it->second.backfilling ? "backfilling"
                                                          : "live";
        if (it->second.after) view["backfilled_up_to_key"] = *it->second.after;
      }
      views.push_back(view);
    }
  }
  report["views"] = views;
  if (!live.is_null() && live.contains("snapshot")) report["snapshot"] = live["snapshot"];
  if (!live.is_null() && live.contains("spool")) report["spool"] = live["spool"];

  if (options.json) {
    std::fprintf(options.out, "%s\n", report.dump(2).c_str());
    return 0;
  }
  std::string out = "pipeline " + config.pipeline + " (" +
                    (live.is_null() ? "not running: nothing answers on http://" + config.http.listen
                                    : std::string("running")) +
                    ")\n";
  const auto& s = report["slot"];
  if (!s.value("exists", false)) {
    out += "slot " + config.source.slot + ": does not exist (pgderive run creates it)\n";
  } else {
    out +=
        "slot " + config.source.slot + ": " + (s.value("active", false) ? "active" : "inactive") +
        ", confirmed " + Text(s, "confirmed_flush_lsn") + ", lag " + Text(s, "lag_bytes") +
        " bytes" + (s.contains("lag_seconds") ? " / " + Text(s, "lag_seconds") + " s" : "") +
        ", retained WAL " + Text(s, "retained_wal_bytes") + " bytes, wal_status " +
        Text(s, "wal_status") + ", safe_wal_size " + Text(s, "safe_wal_size", "unlimited") + "\n";
  }
  if (report.contains("spool")) {
    const auto& log = report["spool"];
    out += "change log: " + FormatByteSize(log.value("bytes", uint64_t{0})) + " of " +
           FormatByteSize(log.value("max_bytes", uint64_t{0})) + " in " + Text(log, "segments") +
           " segment(s), oldest " + Text(log, "oldest_lsn") + ", durable " +
           Text(log, "durable_lsn") + "\n";
    if (log.contains("capture_paused")) {
      out += "change log: capture paused: " + Text(log, "capture_paused") + "\n";
    }
  }
  for (const auto& store : stores) {
    out += "store " + store.value("name", "") + ": ";
    if (store.contains("error")) {
      out += "unreachable: " + store["error"].get<std::string>() + "\n";
      continue;
    }
    out += "checkpoint " + Text(store, "checkpoint", "none") + ", lag " +
           Text(store, "lag_bytes", "?") + " bytes";
    if (store.contains("lag_seconds")) out += ", " + Text(store, "lag_seconds") + " s";
    if (store.contains("spool_behind_bytes")) {
      out += ", " + Text(store, "spool_behind_bytes") + " bytes behind the change log";
    }
    if (store.contains("evicted")) out += "; " + Text(store, "evicted");
    out += "\n";
  }
  for (const auto& v : views) {
    out +=
        "view " + v.value("name", "") + " (" + v.value("store", "") + "): " + v.value("state", "");
    if (v.contains("progress_percent")) {
      char pct[32];
      std::snprintf(pct, sizeof pct, " %.0f%%", v["progress_percent"].get<double>());
      out += pct;
    }
    if (v.contains("stalled_since")) {
      char seconds[64];
      std::snprintf(seconds, sizeof seconds, " (%.0f s), lag %.1f s / ",
                    v.value("stalled_seconds", 0.0), v.value("lag_seconds", 0.0));
      out += " since " + Text(v, "stalled_since") + seconds + Text(v, "lag_bytes") + " bytes";
    }
    if (v.contains("reason")) out += ": " + Text(v, "reason");
    if (v.contains("recorded_state")) out += " (recorded " + Text(v, "recorded_state");
    if (v.contains("backfilled_up_to_key")) out += ", up to key " + Text(v, "backfilled_up_to_key");
    if (v.contains("recorded_state")) out += ")";
    out += "\n";
    // Its versions, when a changed definition has more than one (view_versions.h).
    if (v.contains("versions") && v["versions"].size() > 1) {
      for (const auto& version : v["versions"]) {
        out += "  version " + Text(version, "generation") + " (" + Text(version, "where") +
               "): " + Text(version, "state");
        if (version.contains("progress_percent")) {
          char pct[32];
          std::snprintf(pct, sizeof pct, " %.0f%%", version["progress_percent"].get<double>());
          out += pct;
        }
        if (version.contains("dropped_at")) out += ", dropped at " + Text(version, "dropped_at");
        out += "\n";
      }
    }
  }
  if (report.contains("snapshot")) {
    const auto& snap = report["snapshot"];
    out += "snapshot: " + Text(snap, "rows") + " of ~" + Text(snap, "estimated_rows") + " rows, " +
           Text(snap, "rows_per_second") + " rows/s, about " + Text(snap, "eta_seconds") +
           " s left\n";
  }
  std::fputs(RedactSecrets(out).c_str(), options.out);
  return 0;
}

}  // namespace pgderive
