#pragma once

// An owned libpq connection, for the walsender's replication commands (PostgreSQL docs,
// "Streaming Replication Protocol", §55.4), which libpqxx does not speak. Its SQL mode
// serves the snapshot reader's COPY (see docs/architecture.md, Dependencies) and test
// setup; every other SQL session is a SqlSession (sql_session.h). Every
// session is pinned to TimeZone=UTC, DateStyle=ISO and extra_float_digits=3 so that the
// text output of values is exact and stable whatever the server's defaults.

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "cdc/lsn.h"
#include "cdc/sql_session.h"

namespace pgderive {

struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

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

class PgConnection final : public SqlRunner {
 public:
  enum class Mode { kSql, kReplication };

  // `dsn` is a libpq connection string or URI. Errors never quote the password.
  static Result<PgConnection> Connect(std::string_view dsn, Mode mode,
                                      std::string_view application_name = "pgderive");

  // Whether a PostgreSQL server answers at `dsn` at all (PQpingParams: accepting
  // connections, whatever it would say to our credentials). False when it cannot be
  // reached or is starting up or shutting down.
  static bool ServerAnswers(std::string_view dsn);

  // COPY ... FROM STDIN with `data` (rows in COPY text format, cdc/copy_text.h).
  Status CopyIn(std::string_view copy_sql, std::string_view data);

  // Replication commands; the connection must be in Mode::kReplication.
  Result<SystemIdentity> IdentifySystem();
  Result<CreatedSlot> CreateLogicalSlot(std::string_view slot_name, std::string_view plugin,
                                        bool temporary, SlotSnapshot snapshot);
  Status DropSlot(std::string_view slot_name, bool wait);

  int server_version() const override { return PQserverVersion(conn_.get()); }
  PGconn* get() const { return conn_.get(); }

  std::string QuoteIdentifier(std::string_view identifier) const override;
  std::string QuoteLiteral(std::string_view literal) const override;

 private:
  struct ConnDeleter {
    void operator()(PGconn* conn) const { PQfinish(conn); }
  };
  explicit PgConnection(PGconn* conn) : conn_(conn) {}

  Result<PgRows> DoQuery(std::string_view sql, const SqlParams& params) override;
  Result<PgResultPtr> Run(std::string_view sql, const SqlParams& params);
  Error ErrorFrom(const PGresult* result, std::string_view what) const;

  std::unique_ptr<PGconn, ConnDeleter> conn_;
};

}  // namespace pgderive
