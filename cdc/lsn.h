#pragma once

// Strong types for the scalars of the replication protocol, so that an LSN is never
// mixed up with an xid or a relation OID. Text form of an LSN as PostgreSQL prints it
// (pg_lsn_out): two upper-case hex halves, "16/B374D848".

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgderive {

struct Lsn {
  uint64_t value = 0;

  auto operator<=>(const Lsn&) const = default;

  // Accepts what pg_lsn_in accepts: 1-8 hex digits, '/', 1-8 hex digits, either case.
  static std::optional<Lsn> Parse(std::string_view text);
  std::string ToString() const;
  bool IsValid() const { return value != 0; }  // InvalidXLogRecPtr is 0/0
};

struct Xid {
  uint32_t value = 0;
  auto operator<=>(const Xid&) const = default;
};

struct RelationId {  // pg_class OID
  uint32_t value = 0;
  auto operator<=>(const RelationId&) const = default;
};

}  // namespace pgderive
