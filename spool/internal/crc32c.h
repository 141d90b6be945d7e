#pragma once

// CRC-32C (Castagnoli, the iSCSI polynomial 0x1EDC6F41, reflected), as RocksDB, Kafka and
// ext4 use it for records. Written here because Debian ships no C/C++ library for it:
// the SSE 4.2 instruction where the CPU has it (x86-64), a table otherwise.

#include <cstddef>
#include <cstdint>

namespace pgderive::spool_internal {

// Extends `crc` (0 to start) over `size` bytes. Crc32c("123456789") = 0xE3069283.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);
inline uint32_t Crc32c(const void* data, size_t size) { return Crc32cExtend(0, data, size); }

}  // namespace pgderive::spool_internal
