// A writer thread for tests that read a view while it is rebuilt or switched: until
// stopped, on its own connection, it updates rows 1..rows of `table` (id, name, n),
// inserts rows from `first_new_id` up and deletes only those, so that every row
// 1..rows exists all along. committed() counts its statements.
#pragma once

#include <atomic>
#include <random>
#include <string>
#include <thread>

#include "tests/support/pg.h"

namespace pgderive::testing {

class RowWriter {
 public:
  RowWriter(const std::string& dsn, const std::string& table, int rows, int first_new_id)
      : thread_([this, dsn, table, rows, first_new_id] {
          PgConnection c = MustConnect(dsn);
          std::mt19937 random(7);
          int next_id = first_new_id;
          while (running_.load()) {
            const int id = 1 + static_cast<int>(random() % rows);
            switch (random() % 3) {
              case 0:
                MustExecute(c, "insert into " + table + " values (" + std::to_string(next_id++) +
                                   ", 'new', 0)");
                break;
              case 1:
                MustExecute(c, "delete from " + table + " where id = (select max(id) from " +
                                   table + " where id > " + std::to_string(rows) + ")");
                break;
              default:
                MustExecute(c, "update " + table + " set n = n + 1, name = md5(random()::text) " +
                                   "where id = " + std::to_string(id));
            }
            ++committed_;
          }
        }) {}
  ~RowWriter() { Stop(); }
  void Stop() {
    running_.store(false);
    if (thread_.joinable()) thread_.join();
  }
  int committed() const { return committed_.load(); }

 private:
  std::atomic<bool> running_{true};
  std::atomic<int> committed_{0};
  std::thread thread_;
};

}  // namespace pgderive::testing
