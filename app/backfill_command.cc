#include "app/backfill_command.h"

#include <thread>

#include "app/progress_watch.h"
#include "app/sink_factory.h"
#include "base/redact.h"
#include "cdc/sql_session.h"
#include "config/config.h"
#include "snapshot/backfill.h"

namespace pgderive {

int RunBackfill(const BackfillCommandOptions& options) {
  const std::optional<Config> loaded = LoadConfigOrReport(options.config_path, stderr);
  if (!loaded) return 2;
  const Config& config = *loaded;
  auto fail = [&](int code, const std::string& message) {
    std::fprintf(stderr, "pgderive backfill: %s\n", RedactSecrets(message).c_str());
    return code;
  };
  auto found = config.FindView(options.view);
  if (!found.ok()) return fail(2, found.error().message());
  const ViewConfig* view = found.value();
  auto sql = SqlSession::Connect(config.source.dsn, "pgderive-backfill");
  if (!sql.ok()) return fail(1, "source: " + sql.error().message());
  SqlSession& c = sql.value();
  auto slot = c.Query("select 1 from pg_replication_slots where slot_name = " +
                      c.QuoteLiteral(config.source.slot));
  if (!slot.ok()) return fail(1, "source: " + slot.error().message());
  if (slot.value().rows.empty()) {
    return fail(2, "pipeline " + config.pipeline + " has no slot " + config.source.slot +
                       " yet: `pgderive run` fills every view when it first starts");
  }
  auto made = MakeSinks(config, view->name);
  if (!made.ok()) return fail(1, made.error().message());
  Sink& sink = *made.value().front();
  Status status = sink.Resolve(c, /*checked=*/true);
  if (status.ok()) status = sink.Connect();
  if (!status.ok()) return fail(1, "store " + sink.name() + ": " + status.error().message());

  const std::string request = BackfillRequestMessage(config.pipeline, view->name);
  auto sent = c.Query("select pg_logical_emit_message(true, " + c.QuoteLiteral(kBackfillPrefix) +
                      ", " + c.QuoteLiteral(request) + ")::text");
  if (!sent.ok()) return fail(1, "source: " + sent.error().message());
  // Past the request's commit record: a store whose checkpoint passes this has applied it.
  auto after = c.Query("select pg_current_wal_insert_lsn()::text");
  if (!after.ok()) return fail(1, "source: " + after.error().message());
  const Lsn at = Lsn::Parse(after.value().rows[0][0].value_or("")).value_or(Lsn{});
  std::fprintf(options.out, "backfill of view %s requested at %s\n", view->name.c_str(),
               at.ToString().c_str());
  std::fflush(options.out);
  if (!options.wait) return 0;

  // Done when the store has applied the request and records the view live; meanwhile
  // the running pipeline's progress of the view, as a person can watch it.
  const auto started = std::chrono::steady_clock::now();
  ProgressLine line = ViewProgressLine(options.out, "view " + view->name, options.interval);
  uint64_t rows_seen = 0;
  while (true) {
    auto checkpoint = sink.ReadCheckpoint();
    std::string where = "store " + sink.name() + " has not reached the request yet";
    if (checkpoint.ok() && checkpoint.value() && *checkpoint.value() >= at) {
      // (A postgres view is backfilling while a mirror it reads is filled again.)
      auto states = sink.ReadViewStates();
      if (states.ok() && states.value()) {
        auto it = states.value()->find(view->name);
        if (it != states.value()->end() && !it->second.backfilling) break;
        if (it != states.value()->end()) {
          where = "backfilling, after key " + it->second.after.value_or("(none yet)");
        }
      }
    }
    const ViewProgress progress = ReadViewProgress(config.http.listen, view->store, view->name);
    rows_seen = std::max(rows_seen, progress.rows);
    line.Update(SampleOf(progress, config.http.listen));
    const auto now = std::chrono::steady_clock::now();
    if (options.timeout.count() > 0 && now - started >= options.timeout) {
      line.Finish("not live after " + std::to_string(options.timeout.count()) + " s");
      return fail(1, "view " + view->name + " is not live after " +
                         std::to_string(options.timeout.count()) + " s (" + where +
                         "); is `pgderive run` running?");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::string summary = "done, live again";
  if (rows_seen > 0) {
    summary += ": " + GroupDigits(rows_seen) + " rows";
    if (seconds > 0) {
      summary += ", " + GroupDigits(static_cast<uint64_t>(rows_seen / seconds)) + " rows/s";
    }
  }
  line.Finish(summary);
  return 0;
}

}  // namespace pgderive
