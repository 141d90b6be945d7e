#pragma once

// Endpoints of the real local stack (compose/local/stack up) for integration tests.
// The stack writes a KEY=VALUE env file; PGDERIVE_STACK_ENV names it.

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace pgderive::testing {

class StackEnv {
 public:
  // Parses KEY=VALUE lines; blank lines and '#' comments are skipped. nullopt and a
  // reason in *why on a malformed line.
  static std::optional<StackEnv> Parse(std::string_view text, std::string* why);

  // The stack of this test run, or nullptr and the reason when PGDERIVE_STACK_ENV is
  // unset, unreadable or malformed. Integration tests fail on that, never skip.
  static const StackEnv* Find(std::string* why);

  // Empty string when the key is absent.
  std::string Value(std::string_view key) const;
  std::string pg_dsn() const { return Value("PGDERIVE_PG_DSN"); }
  std::string redis_url() const { return Value("PGDERIVE_REDIS_URL"); }
  std::string opensearch_url() const { return Value("PGDERIVE_OPENSEARCH_URL"); }

 private:
  std::map<std::string, std::string, std::less<>> values_;
};

// A name no other test (or concurrent run) uses: prefix + pid + counter + random.
std::string UniqueName(std::string_view prefix);

}  // namespace pgderive::testing

// Use at the top of an integration test: the endpoints, or a fatal failure that names
// what is missing.
#define PGDERIVE_REQUIRE_STACK()                               \
  std::string stack_missing_why;                               \
  const ::pgderive::testing::StackEnv* stack_ptr =             \
      ::pgderive::testing::StackEnv::Find(&stack_missing_why); \
  ASSERT_NE(stack_ptr, nullptr) << stack_missing_why;          \
  const ::pgderive::testing::StackEnv& stack = *stack_ptr
