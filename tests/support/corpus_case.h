#pragma once

// One case of the integrity corpus (tests/corpus/*.sql): a schema, the source's writes
// before and while `pgderive run` streams, and the exact state every view must end in.
// tests/corpus/README.md describes the format; tests/integration/corpus_test.cc drives
// the cases against the real stack.
//
// A file is a list of sections, each opened by a line "---- KIND [ARGUMENT]":
//   config                the YAML list under `views:` (stores cache, search, warehouse)
//   schema, before        SQL run before `run` starts
//   stream                SQL sent while it streams (one simple query per section)
//   restart               SIGTERM `run`, wait for exit 0, start it again
//   expect KIND [ARG]     what must hold once caught up; KIND is postgres, redis,
//                         opensearch, status, readyz, verify, validate or metric
// Lines before the first section are the case's description ("-- " comments).

#include <string>
#include <vector>

namespace pgderive::testing {

struct CorpusStep {
  enum class Kind { kStream, kRestart };
  Kind kind = Kind::kStream;
  std::string sql;  // kStream
  int line = 0;     // the section's line in the file
};

struct CorpusExpectation {
  std::string kind;                // postgres, redis, opensearch, status, readyz, ...
  std::string argument;            // the rest of the section line (a query, a pattern)
  std::vector<std::string> lines;  // the section's non-empty lines
  int line = 0;
};

struct CorpusCase {
  std::string name;         // the file's stem
  std::string description;  // the leading comment lines, "-- " removed
  std::string views_yaml;   // the `config` section
  std::string schema;
  std::string before;
  std::vector<CorpusStep> steps;
  std::vector<CorpusExpectation> expectations;

  // The expectation of `kind`, or nullptr.
  const CorpusExpectation* Find(const std::string& kind) const;
};

// Parses a corpus file's text. Throws std::runtime_error naming `name`, the line and the
// problem on anything malformed (an unknown section or expectation kind, text before
// the first section that is not a comment, a case without config or expectations).
CorpusCase ParseCorpusCase(const std::string& name, const std::string& text);

// Every *.sql file of `dir`, parsed, sorted by name.
std::vector<CorpusCase> LoadCorpus(const std::string& dir);

}  // namespace pgderive::testing
