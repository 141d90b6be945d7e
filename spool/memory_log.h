#pragma once

// The change log in memory: the same semantics as the disk log (spool/segment_log.h)
// without durability - Sync only publishes what was appended. For tests, and the model
// the disk log is checked against. Each transaction counts as one segment, so
// TruncateThrough removes exactly the transactions at or before its position.
// Thread-safe as ChangeLog says.

#include <memory>

#include "spool/change_log.h"

namespace pgderive {

std::unique_ptr<ChangeLog> NewMemoryLog();

}  // namespace pgderive
