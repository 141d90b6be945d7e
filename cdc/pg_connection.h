#pragma once

// An owned libpq connection, for ordinary SQL and for the walsender's replication
// commands (PostgreSQL docs, "Streaming Replication Protocol", §55.4). Every session
// is pinned to TimeZone=UTC, DateStyle=ISO and extra_float_digits=3 so that the text
// output of values is exact and stable whatever the server's defaults.

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "cdc/lsn.h"

namespace pgderive {

struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

// Rows of a command's result, as text (NULL as nullopt).
struct PgRows {
  std::vector<std::string> columns;
  std::vector<std::vector<std::optional<std::string>>> rows;
};

// IDENTIFY_SYSTEM's one row.
struct SystemIdentity {
  std::string systemid;
  uint32_t timeline = 0;
  Lsn xlogpos;
  std::string dbname;
};

// CREATE_REPLICATION_SLOT's one row.
struct CreatedSlot {
  std::string slot_name;
  Lsn consistent_point;
  std::optional<std::string> snapshot_name;  // set when the snapshot was exported
  std::string output_plugin;
};

enum class SlotSnapshot { kExport, kNoExport, kUse };

// "schema.table" as configured -> {schema, table}; no dot means the public schema.
std::pair<std::string, std::string> SplitTableName(std::string_view table);

class PgConnection {
 public:
  enum class Mode { kSql, kReplication };

  // `dsn` is a libpq connection string or URI. Errors never quote the password.
  static Result<PgConnection> Connect(std::string_view dsn, Mode mode,
                                      std::string_view application_name = "pgderive");

  // Runs one command (simple query protocol) and returns its rows.
  Result<PgRows> Query(std::string_view sql);
  Status Execute(std::string_view sql);

  // COPY ... FROM STDIN with `data` (rows in COPY text format, cdc/copy_text.h).
  Status CopyIn(std::string_view copy_sql, std::string_view data);

  // Replication commands; the connection must be in Mode::kReplication.
  Result<SystemIdentity> IdentifySystem();
  Result<CreatedSlot> CreateLogicalSlot(std::string_view slot_name, std::string_view plugin,
                                        bool temporary, SlotSnapshot snapshot);
  Status DropSlot(std::string_view slot_name, bool wait);

  int server_version() const { return PQserverVersion(conn_.get()); }
  PGconn* get() const { return conn_.get(); }

  // Quotes an identifier / a literal for this connection's encoding.
  std::string QuoteIdentifier(std::string_view identifier) const;
  std::string QuoteLiteral(std::string_view literal) const;
  // "schema.table" as configured (unquoted names, split at the first dot; no dot means
  // public) -> "schema"."table".
  std::string QuoteTableName(std::string_view table) const;

 private:
  struct ConnDeleter {
    void operator()(PGconn* conn) const { PQfinish(conn); }
  };
  explicit PgConnection(PGconn* conn) : conn_(conn) {}

  Result<PgResultPtr> Run(std::string_view sql);
  Error ErrorFrom(const PGresult* result, std::string_view what) const;

  std::unique_ptr<PGconn, ConnDeleter> conn_;
};

}  // namespace pgderive
