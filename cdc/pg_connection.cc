#include "cdc/pg_connection.h"

#include <cstdlib>
#include <cstring>

#include "base/number.h"
#include "base/redact.h"

namespace pgderive {
namespace {

// Pinned for every session: stable, exact text output (see the header).
constexpr const char* kSessionOptions =
    "-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3 -c IntervalStyle=postgres "
    "-c bytea_output=hex";

// SQLSTATE classes that are worth a retry: connection exceptions (08), transaction
// rollbacks such as serialization failures (40), insufficient resources (53) and
// operator intervention such as admin_shutdown (57P01) or crash_shutdown (57P02).
bool IsTransientSqlState(std::string_view state) {
  return state.starts_with("08") || state.starts_with("40") || state.starts_with("53") ||
         state.starts_with("57P");
}

std::string TrimmedMessage(const char* message) {
  std::string text = message != nullptr ? message : "";
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return RedactSecrets(text);
}

}  // namespace

Result<PgConnection> PgConnection::Connect(std::string_view dsn, Mode mode,
                                           std::string_view application_name) {
  const std::string dsn_text(dsn);
  const std::string app(application_name);
  // expand_dbname=1: the first "dbname" value is the user's DSN; the keywords after it
  // override what it says, so the session options always hold.
  const char* keywords[] = {"dbname", "options", "application_name",
                            mode == Mode::kReplication ? "replication" : nullptr, nullptr};
  const char* values[] = {dsn_text.c_str(), kSessionOptions, app.c_str(),
                          mode == Mode::kReplication ? "database" : nullptr, nullptr};
  PgConnection connection(PQconnectdbParams(keywords, values, /*expand_dbname=*/1));
  if (connection.conn_ == nullptr) return Error::Transient("out of memory creating a connection");
  if (PQstatus(connection.conn_.get()) != CONNECTION_OK) {
    const std::string message = TrimmedMessage(PQerrorMessage(connection.conn_.get()));
    // A malformed DSN is the user's to fix; anything after parsing may be a server
    // that is not up yet.
    if (message.find("invalid connection option") != std::string::npos ||
        message.find("invalid URI") != std::string::npos ||
        message.find("missing \"=\"") != std::string::npos) {
      return Error::Permanent("bad PostgreSQL connection string: " + message);
    }
    return Error::Transient("cannot connect to PostgreSQL: " + message);
  }
  // Server notices ("table ... does not exist, skipping") are not ours to print.
  PQsetNoticeProcessor(
      connection.conn_.get(), [](void*, const char*) {}, nullptr);
  return connection;
}

bool PgConnection::ServerAnswers(std::string_view dsn) {
  const std::string dsn_text(dsn);
  const char* keywords[] = {"dbname", nullptr};
  const char* values[] = {dsn_text.c_str(), nullptr};
  const PGPing ping = PQpingParams(keywords, values, /*expand_dbname=*/1);
  // PQPING_NO_ATTEMPT: the DSN itself is bad, which connecting reports.
  return ping == PQPING_OK || ping == PQPING_NO_ATTEMPT;
}

Error PgConnection::ErrorFrom(const PGresult* result, std::string_view what) const {
  const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  std::string message = std::string(what) + ": ";
  message += TrimmedMessage(result != nullptr ? PQresultErrorMessage(result)
                                              : PQerrorMessage(conn_.get()));
  if (state != nullptr) {
    message += " (SQLSTATE ";
    message += state;
    message += ")";
  }
  if (PQstatus(conn_.get()) != CONNECTION_OK || state == nullptr || IsTransientSqlState(state)) {
    return Error::Transient(std::move(message));
  }
  return Error::Permanent(std::move(message));
}

Result<PgResultPtr> PgConnection::Run(std::string_view sql, const SqlParams& params) {
  const std::string text(sql);
  PgResultPtr result;
  if (params.empty()) {
    result.reset(PQexec(conn_.get(), text.c_str()));
  } else {
    std::vector<const char*> values;  // nullptr is NULL
    values.reserve(params.size());
    for (const auto& param : params) values.push_back(param ? param->c_str() : nullptr);
    result.reset(PQexecParams(conn_.get(), text.c_str(), static_cast<int>(values.size()), nullptr,
                              values.data(), nullptr, nullptr, 0));
  }
  const ExecStatusType status =
      result != nullptr ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    // Name the command, not its arguments: they may hold literals we should not echo.
    const std::string_view verb = sql.substr(0, sql.find(' '));
    return ErrorFrom(result.get(), std::string(verb) + " failed");
  }
  return result;
}

Result<PgRows> PgConnection::DoQuery(std::string_view sql, const SqlParams& params) {
  auto result = Run(sql, params);
  if (!result.ok()) return result.error();
  const PGresult* res = result.value().get();
  PgRows rows;
  const int nfields = PQnfields(res);
  for (int c = 0; c < nfields; ++c) rows.columns.emplace_back(PQfname(res, c));
  const int ntuples = PQntuples(res);
  rows.rows.reserve(static_cast<size_t>(ntuples));
  for (int r = 0; r < ntuples; ++r) {
    auto& row = rows.rows.emplace_back();
    row.reserve(static_cast<size_t>(nfields));
    for (int c = 0; c < nfields; ++c) {
      if (PQgetisnull(res, r, c)) {
        row.emplace_back(std::nullopt);
      } else {
        row.emplace_back(std::string(PQgetvalue(res, r, c), PQgetlength(res, r, c)));
      }
    }
  }
  return rows;
}

Result<SystemIdentity> PgConnection::IdentifySystem() {
  auto rows = Query("IDENTIFY_SYSTEM");
  if (!rows.ok()) return rows.error();
  const auto& r = rows.value().rows;
  if (r.size() != 1 || r[0].size() < 4 || !r[0][0] || !r[0][1] || !r[0][2]) {
    return Error::Corrupt("IDENTIFY_SYSTEM returned an unexpected shape");
  }
  SystemIdentity identity;
  identity.systemid = *r[0][0];
  auto timeline = ParseNumber<uint32_t>(*r[0][1], ErrorKind::kCorrupt);
  if (!timeline.ok()) {
    return Error::Corrupt("IDENTIFY_SYSTEM returned a bad timeline: " + timeline.error().message());
  }
  identity.timeline = timeline.value();
  auto lsn = Lsn::Parse(*r[0][2]);
  if (!lsn) return Error::Corrupt("IDENTIFY_SYSTEM returned a bad xlogpos '" + *r[0][2] + "'");
  identity.xlogpos = *lsn;
  identity.dbname = r[0][3].value_or("");
  return identity;
}

Result<CreatedSlot> PgConnection::CreateLogicalSlot(std::string_view slot_name,
                                                    std::string_view plugin, bool temporary,
                                                    SlotSnapshot snapshot) {
  // PostgreSQL 15 grammar: CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL plugin
  // (SNAPSHOT 'export' | 'nothing' | 'use').
  const char* snapshot_option = snapshot == SlotSnapshot::kExport     ? "export"
                                : snapshot == SlotSnapshot::kNoExport ? "nothing"
                                                                      : "use";
  std::string sql = "CREATE_REPLICATION_SLOT " + QuoteIdentifier(slot_name);
  if (temporary) sql += " TEMPORARY";
  sql += " LOGICAL " + QuoteIdentifier(plugin) + " (SNAPSHOT '" + snapshot_option + "')";
  auto rows = Query(sql);
  if (!rows.ok()) return rows.error();
  const auto& r = rows.value().rows;
  if (r.size() != 1 || r[0].size() < 4 || !r[0][0] || !r[0][1]) {
    return Error::Corrupt("CREATE_REPLICATION_SLOT returned an unexpected shape");
  }
  CreatedSlot slot;
  slot.slot_name = *r[0][0];
  auto lsn = Lsn::Parse(*r[0][1]);
  if (!lsn) {
    return Error::Corrupt("CREATE_REPLICATION_SLOT returned a bad consistent_point '" + *r[0][1] +
                          "'");
  }
  slot.consistent_point = *lsn;
  slot.snapshot_name = r[0][2];
  slot.output_plugin = r[0][3].value_or("");
  return slot;
}

Status PgConnection::DropSlot(std::string_view slot_name, bool wait) {
  std::string sql = "DROP_REPLICATION_SLOT " + QuoteIdentifier(slot_name);
  if (wait) sql += " WAIT";
  return Execute(sql);
}

std::string PgConnection::QuoteIdentifier(std::string_view identifier) const {
  std::unique_ptr<char, decltype(&PQfreemem)> quoted(
      PQescapeIdentifier(conn_.get(), identifier.data(), identifier.size()), &PQfreemem);
  return quoted != nullptr ? std::string(quoted.get()) : std::string();
}

std::string PgConnection::QuoteLiteral(std::string_view literal) const {
  std::unique_ptr<char, decltype(&PQfreemem)> quoted(
      PQescapeLiteral(conn_.get(), literal.data(), literal.size()), &PQfreemem);
  return quoted != nullptr ? std::string(quoted.get()) : std::string();
}

Status PgConnection::CopyIn(std::string_view copy_sql, std::string_view data) {
  {
    const std::string text(copy_sql);
    PgResultPtr started(PQexec(conn_.get(), text.c_str()));
    if (started == nullptr || PQresultStatus(started.get()) != PGRES_COPY_IN) {
      return ErrorFrom(started.get(), "COPY failed");
    }
  }
  if (PQputCopyData(conn_.get(), data.data(), static_cast<int>(data.size())) != 1 ||
      PQputCopyEnd(conn_.get(), nullptr) != 1) {
    return Error::Transient("COPY failed: " + RedactSecrets(PQerrorMessage(conn_.get())));
  }
  PgResultPtr result(PQgetResult(conn_.get()));
  Status status = Status::Ok();
  if (result == nullptr || PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
    status = ErrorFrom(result.get(), "COPY");
  }
  while (PgResultPtr rest{PQgetResult(conn_.get())}) {
  }
  return status;
}

}  // namespace pgderive
