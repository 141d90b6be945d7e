#pragma once

// Ordinary SQL sessions with PostgreSQL, through libpqxx. (The replication connection -
// IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT, START_REPLICATION - is libpq, in
// pg_connection.h: libpqxx does not speak the replication protocol.)
//
// Every session is pinned to TimeZone=UTC, DateStyle=ISO, IntervalStyle=postgres,
// extra_float_digits=3 and bytea_output=hex, so that the text output of values is exact
// and stable whatever the server's defaults.
//
// libpqxx stays behind this header (pimpl): its exceptions are caught here and returned
// as Error - transient when the connection broke or the server asks for a retry
// (SQLSTATE classes 08, 40, 53, 57P), permanent for any other SQL error, with
// "(SQLSTATE xxxxx)" at the end of the message. Messages never quote the password
// (base/redact.h) nor the statement's arguments.

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "base/table_name.h"

namespace pgderive {

// Rows of a command's result, as text (NULL as nullopt).
struct PgRows {
  std::vector<std::string> columns;
  std::vector<std::vector<std::optional<std::string>>> rows;
};

// The values of $1, $2, ... in text form; nullopt is NULL.
using SqlParams = std::vector<std::optional<std::string>>;

// A text[] literal of `values` ({"a","b\"c"}), to bind a list as one parameter:
// "= any($1::text[])", "unnest($1::text[])".
std::string SqlTextArray(const std::vector<std::string>& values);

// Statements on one PostgreSQL session, in autocommit or inside one of its transactions:
// what catalog reads, checks and migrations need, whichever of the two they run in.
class SqlRunner {
 public:
  virtual ~SqlRunner() = default;

  // Runs one command and returns its rows. Without parameters the simple query protocol
  // runs `sql` as is (several statements allowed; the rows are the last one's); with
  // parameters `sql` is one statement with $1, $2, ... bound to `params`.
  Result<PgRows> Query(std::string_view sql, const SqlParams& params = {}) {
    return DoQuery(sql, params);
  }
  Status Execute(std::string_view sql, const SqlParams& params = {}) {
    return DoQuery(sql, params).status();
  }

  // Quotes an identifier / a literal for this session's encoding.
  virtual std::string QuoteIdentifier(std::string_view identifier) const = 0;
  virtual std::string QuoteLiteral(std::string_view literal) const = 0;
  // "schema.table" as configured -> '"schema"."table"'::regclass, the table's oid in SQL.
  std::string QuoteRegclass(std::string_view table) const {
    return QuoteLiteral(TableName::Parse(table).Quoted()) + "::regclass";
  }

  virtual int server_version() const = 0;

 private:
  virtual Result<PgRows> DoQuery(std::string_view sql, const SqlParams& params) = 0;
};

class SqlSession final : public SqlRunner {
 public:
  enum class Isolation { kReadCommitted, kRepeatableRead, kSerializable };
  enum class Access { kReadWrite, kReadOnly };

  // A transaction of the session (BEGIN on Begin); rolled back when it goes away
  // uncommitted. It must not outlive its session; while it is open, statements go
  // through it, not through the session.
  class Transaction final : public SqlRunner {
   public:
    Transaction(Transaction&&) noexcept;
    Transaction& operator=(Transaction&&) noexcept;
    ~Transaction() override;

    // COPY `table` FROM STDIN with `rows`: COPY text rows, each ended by a newline
    // (cdc/copy_text.h). `table` is quoted already and may carry a column list:
    // "s"."t" ("a", "b").
    Status CopyIn(std::string_view table, std::string_view rows);
    Status Commit();

    std::string QuoteIdentifier(std::string_view identifier) const override;
    std::string QuoteLiteral(std::string_view literal) const override;
    int server_version() const override;

   private:
    friend class SqlSession;
    struct State;
    explicit Transaction(std::unique_ptr<State> state);
    Result<PgRows> DoQuery(std::string_view sql, const SqlParams& params) override;

    std::unique_ptr<State> state_;
  };

  // `dsn` is a libpq connection string or URI. A DSN libpq cannot parse is a permanent
  // error; a failed connection attempt a transient one.
  static Result<SqlSession> Connect(std::string_view dsn,
                                    std::string_view application_name = "pgderive");

  SqlSession(SqlSession&&) noexcept;
  SqlSession& operator=(SqlSession&&) noexcept;
  ~SqlSession() override;

  Result<Transaction> Begin(Isolation isolation = Isolation::kReadCommitted,
                            Access access = Access::kReadWrite);
  // COPY in a transaction of its own (see Transaction::CopyIn).
  Status CopyIn(std::string_view table, std::string_view rows);

  // False once the connection broke: a broken session is never silently reconnected
  // (session state - temporary tables, settings - would be lost); connect anew.
  bool is_open() const;

  std::string QuoteIdentifier(std::string_view identifier) const override;
  std::string QuoteLiteral(std::string_view literal) const override;
  int server_version() const override;

 private:
  struct Impl;
  explicit SqlSession(std::unique_ptr<Impl> impl);
  Result<PgRows> DoQuery(std::string_view sql, const SqlParams& params) override;

  std::unique_ptr<Impl> impl_;
};

// The pure parts, apart for their unit tests.

// The libpq connection string a session connects with: the settings `dsn` names, then
// the pinned session options and `application_name`, which replace any the DSN gives.
// A DSN libpq cannot parse is a permanent error (its message redacted).
Result<std::string> SessionConnectionString(std::string_view dsn,
                                            std::string_view application_name);

// Whether an error with this SQLSTATE is worth a retry: connection exceptions (08),
// transaction rollbacks such as serialization failures and deadlocks (40), insufficient
// resources (53), operator intervention such as admin_shutdown (57P). An unknown
// (empty) state is a transport failure: transient.
ErrorKind SqlStateKind(std::string_view sqlstate);

}  // namespace pgderive
