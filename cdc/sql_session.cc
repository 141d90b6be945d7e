#include "cdc/sql_session.h"

#include <libpq-fe.h>

#include <exception>
#include <pqxx/pqxx>
#include <pqxx/tablewriter>

#include "base/redact.h"

namespace pgderive {
namespace {

// Pinned for every session: stable, exact text output (see the header).
constexpr std::string_view kSessionOptions =
    "-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3 -c IntervalStyle=postgres "
    "-c bytea_output=hex";

// A value in libpq's key='value' form: backslash and single quote escaped.
std::string ConnValue(std::string_view value) {
  std::string quoted = "'";
  for (char c : value) {
    if (c == '\\' || c == '\'') quoted += '\\';
    quoted += c;
  }
  return quoted + "'";
}

std::string Trimmed(std::string_view message) {
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
    message.remove_suffix(1);
  }
  return RedactSecrets(message);
}

// The command's first word: errors name the command, never its arguments (they may
// hold literals we should not echo).
// The label of an error: the statement's verb ("insert failed"), or "statement" when the
// text holds several (the first verb would name a statement that may not be the one at
// fault; PostgreSQL's message and its LINE context say which).
std::string Verb(std::string_view sql) {
  while (!sql.empty() && (sql.front() == ' ' || sql.front() == '\n')) sql.remove_prefix(1);
  const size_t semicolon = sql.find(';');
  if (semicolon != std::string_view::npos &&
      sql.find_first_not_of(" \n\t;", semicolon) != std::string_view::npos) {
    return "statement";
  }
  return std::string(sql.substr(0, sql.find_first_of(" \n;")));
}

// A transaction at isolation `Level`, read-only or read-write (libpqxx takes both as
// template arguments).
template <pqxx::isolation_level Level>
std::unique_ptr<pqxx::dbtransaction> BeginTransaction(pqxx::connection_base& c, bool read_only) {
  if (read_only) return std::make_unique<pqxx::transaction<Level, pqxx::read_only>>(c);
  return std::make_unique<pqxx::transaction<Level>>(c);
}

}  // namespace

struct SqlSession::Impl {
  explicit Impl(const std::string& connection_string) : connection(connection_string) {}
  pqxx::connection connection;
  // Server notices ("table ... does not exist, skipping") are not ours to print.
  std::optional<pqxx::quiet_errorhandler> quiet;
  bool broken = false;

  // Runs `f` (which calls libpqxx) and turns its exceptions into an Error.
  template <typename T, typename F>
  Result<T> Guard(std::string_view what, F&& f) {
    if (broken) return Error::Transient(std::string(what) + ": the connection is broken");
    try {
      return f();
    } catch (const pqxx::broken_connection& e) {
      broken = true;
      return Error::Transient(std::string(what) + ": connection lost: " + Trimmed(e.what()));
    } catch (const pqxx::in_doubt_error& e) {
      broken = true;
      return Error::Transient(std::string(what) + ": outcome unknown: " + Trimmed(e.what()));
    } catch (const pqxx::sql_error& e) {
      const std::string& state = e.sqlstate();
      std::string message = std::string(what) + ": " + Trimmed(e.what());
      if (!state.empty()) message += " (SQLSTATE " + state + ")";
      if (!connection.is_open()) broken = true;
      if (broken || SqlStateKind(state) == ErrorKind::kTransient) {
        return Error::Transient(std::move(message));
      }
      return Error::Permanent(std::move(message));
    } catch (const pqxx::transaction_rollback& e) {
      // libpqxx 6 raises class 40 (serialization failure, deadlock) apart from sql_error.
      return Error::Transient(std::string(what) + ": " + Trimmed(e.what()));
    } catch (const pqxx::failure& e) {
      // I/O with the server failed (a COPY line not sent, say).
      if (!connection.is_open()) broken = true;
      return Error::Transient(std::string(what) + ": " + Trimmed(e.what()));
    } catch (const std::bad_alloc&) {
      return Error::Transient(std::string(what) + ": out of memory");
    } catch (const std::exception& e) {
      // libpqxx usage, conversion and range errors: a statement or value that is wrong.
      return Error::Permanent(std::string(what) + ": " + Trimmed(e.what()));
    }
  }

  static PgRows RowsOf(const pqxx::result& result) {
    PgRows rows;
    const auto ncolumns = result.columns();
    rows.columns.reserve(ncolumns);
    for (pqxx::row::size_type c = 0; c < ncolumns; ++c) {
      rows.columns.emplace_back(result.column_name(c));
    }
    rows.rows.reserve(result.size());
    for (const pqxx::row& source : result) {
      auto& row = rows.rows.emplace_back();
      row.reserve(ncolumns);
      for (const pqxx::field& field : source) {
        if (field.is_null()) {
          row.emplace_back(std::nullopt);
        } else {
          row.emplace_back(std::string(field.c_str(), field.size()));
        }
      }
    }
    return rows;
  }

  static pqxx::result Run(pqxx::transaction_base& tx, std::string_view sql,
                          const SqlParams& params) {
    const std::string text(sql);
    if (params.empty()) return tx.exec(text);
    std::vector<const char*> values;  // nullptr is NULL
    values.reserve(params.size());
    for (const auto& param : params) values.push_back(param ? param->c_str() : nullptr);
    return tx.exec_params(text, pqxx::prepare::make_dynamic_params(values));
  }
};

struct SqlSession::Transaction::State {
  SqlSession::Impl* session = nullptr;
  std::unique_ptr<pqxx::dbtransaction> tx;
};

Result<std::string> SessionConnectionString(std::string_view dsn,
                                            std::string_view application_name) {
  char* parse_error = nullptr;
  const std::string dsn_text(dsn);
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> options(
      PQconninfoParse(dsn_text.c_str(), &parse_error), &PQconninfoFree);
  if (options == nullptr) {
    std::string message = parse_error != nullptr ? Trimmed(parse_error) : "out of memory";
    PQfreemem(parse_error);
    return Error::Permanent("bad PostgreSQL connection string: " + message);
  }
  std::string text;
  for (const PQconninfoOption* option = options.get(); option->keyword != nullptr; ++option) {
    if (option->val == nullptr) continue;
    const std::string_view keyword = option->keyword;
    // Ours: the pinned options and the name; a SQL session is never a replication one.
    if (keyword == "options" || keyword == "application_name" || keyword == "replication") {
      continue;
    }
    text += std::string(keyword) + "=" + ConnValue(option->val) + " ";
  }
  text +=
      "options=" + ConnValue(kSessionOptions) + " application_name=" + ConnValue(application_name);
  return text;
}

ErrorKind SqlStateKind(std::string_view state) {
  if (state.empty() || state.starts_with("08") || state.starts_with("40") ||
      state.starts_with("53") || state.starts_with("57P")) {
    return ErrorKind::kTransient;
  }
  return ErrorKind::kPermanent;
}

std::string SqlTextArray(const std::vector<std::string>& values) {
  std::string literal = "{";
  for (const std::string& value : values) {
    if (literal.size() > 1) literal += ',';
    literal += '"';
    for (char c : value) {
      if (c == '"' || c == '\\') literal += '\\';
      literal += c;
    }
    literal += '"';
  }
  return literal + "}";
}

// ---- SqlSession

SqlSession::SqlSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SqlSession::SqlSession(SqlSession&&) noexcept = default;
SqlSession& SqlSession::operator=(SqlSession&&) noexcept = default;
SqlSession::~SqlSession() = default;

Result<SqlSession> SqlSession::Connect(std::string_view dsn, std::string_view application_name) {
  auto connection_string = SessionConnectionString(dsn, application_name);
  if (!connection_string.ok()) return connection_string.error();
  try {
    auto impl = std::make_unique<Impl>(connection_string.value());
    impl->quiet.emplace(impl->connection);
    // libpqxx 6 would reconnect a broken connection on the next statement, silently
    // dropping the session's temporary tables, settings and open transaction; a broken
    // session is an error its owner handles by connecting anew, as with libpq.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    impl->connection.inhibit_reactivation(true);
#pragma GCC diagnostic pop
    return SqlSession(std::move(impl));
  } catch (const std::bad_alloc&) {
    return Error::Transient("cannot connect to PostgreSQL: out of memory");
  } catch (const std::exception& e) {
    // The DSN parsed: anything now may be a server that is not up yet.
    return Error::Transient("cannot connect to PostgreSQL: " + Trimmed(e.what()));
  }
}

Result<PgRows> SqlSession::DoQuery(std::string_view sql, const SqlParams& params) {
  return impl_->Guard<PgRows>(Verb(sql) + " failed", [&] {
    pqxx::nontransaction tx(impl_->connection);
    return Impl::RowsOf(Impl::Run(tx, sql, params));
  });
}

Result<SqlSession::Transaction> SqlSession::Begin(Isolation isolation, Access access) {
  return impl_->Guard<Transaction>("BEGIN failed", [&] {
    auto state = std::make_unique<Transaction::State>();
    state->session = impl_.get();
    pqxx::connection_base& c = impl_->connection;
    const bool ro = access == Access::kReadOnly;
    switch (isolation) {
      case Isolation::kReadCommitted:
        state->tx = BeginTransaction<pqxx::read_committed>(c, ro);
        break;
      case Isolation::kRepeatableRead:
        state->tx = BeginTransaction<pqxx::repeatable_read>(c, ro);
        break;
      case Isolation::kSerializable:
        state->tx = BeginTransaction<pqxx::serializable>(c, ro);
        break;
    }
    return Transaction(std::move(state));
  });
}

Status SqlSession::CopyIn(std::string_view table, std::string_view rows) {
  auto tx = Begin();
  if (!tx.ok()) return tx.error();
  Status status = tx.value().CopyIn(table, rows);
  if (!status.ok()) return status;
  return tx.value().Commit();
}

bool SqlSession::is_open() const { return !impl_->broken && impl_->connection.is_open(); }

std::string SqlSession::QuoteIdentifier(std::string_view identifier) const {
  return impl_->connection.quote_name(std::string(identifier));
}

std::string SqlSession::QuoteLiteral(std::string_view literal) const {
  return impl_->connection.quote(std::string(literal));
}

int SqlSession::server_version() const { return impl_->connection.server_version(); }

// ---- SqlSession::Transaction

SqlSession::Transaction::Transaction(std::unique_ptr<State> state) : state_(std::move(state)) {}
SqlSession::Transaction::Transaction(Transaction&&) noexcept = default;
SqlSession::Transaction& SqlSession::Transaction::operator=(Transaction&&) noexcept = default;
// The pqxx transaction rolls back in its destructor unless it was committed.
SqlSession::Transaction::~Transaction() = default;

Result<PgRows> SqlSession::Transaction::DoQuery(std::string_view sql, const SqlParams& params) {
  return state_->session->Guard<PgRows>(Verb(sql) + " failed", [&]() -> Result<PgRows> {
    if (state_->tx == nullptr) return Error::Permanent("the transaction has ended");
    return Impl::RowsOf(Impl::Run(*state_->tx, sql, params));
  });
}

Status SqlSession::Transaction::CopyIn(std::string_view table, std::string_view rows) {
  return state_->session
      ->Guard<bool>("COPY failed",
                    [&]() -> Result<bool> {
                      if (state_->tx == nullptr)
                        return Error::Permanent("the transaction has ended");
      // libpqxx 6.4's stream_to keeps write_raw_line private (public from
      // 7.0); tablewriter's is public and sends each line through the same
      // transaction_base::write_copy_line. Its deprecation is about its own
      // value escaping, which is not used here: the rows are COPY text
      // already.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
                      pqxx::tablewriter writer(*state_->tx, std::string(table));
                      std::string line;
                      while (!rows.empty()) {
                        const size_t end = rows.find('\n');
                        line.assign(rows.substr(0, end));
                        writer.write_raw_line(line);
                        rows.remove_prefix(end == std::string_view::npos ? rows.size() : end + 1);
                      }
                      writer.complete();
#pragma GCC diagnostic pop
                      return true;
                    })
      .status();
}

Status SqlSession::Transaction::Commit() {
  return state_->session
      ->Guard<bool>("COMMIT failed",
                    [&]() -> Result<bool> {
                      if (state_->tx == nullptr)
                        return Error::Permanent("the transaction has ended");
                      state_->tx->commit();
                      state_->tx.reset();
                      return true;
                    })
      .status();
}

std::string SqlSession::Transaction::QuoteIdentifier(std::string_view identifier) const {
  return state_->session->connection.quote_name(std::string(identifier));
}

std::string SqlSession::Transaction::QuoteLiteral(std::string_view literal) const {
  return state_->session->connection.quote(std::string(literal));
}

int SqlSession::Transaction::server_version() const {
  return state_->session->connection.server_version();
}

}  // namespace pgderive
