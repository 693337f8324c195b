// base/physical_memory.h
//
// PhysicalMemoryBytes() is the machine's physical memory, the bound a
// front end checks a requested pool against before allocating it: Linux
// overcommits, so a pool far larger than RAM is "created" and the process
// is OOM-killed when its bytes are touched. Used by kv_stress's flag
// checks and the Python binding's pool checks; the library itself leaves
// sizing to the server that embeds it.
//
//   if (const uint64_t ram = PhysicalMemoryBytes();
//       ram != 0 && pool_bytes > ram) { /* refuse, naming both */ }
//
// Thread safety: thread-safe (it asks the system each call).
#ifndef PAGEDKV_BASE_PHYSICAL_MEMORY_H_
#define PAGEDKV_BASE_PHYSICAL_MEMORY_H_

#include <cstdint>

namespace pagedkv {

// sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGE_SIZE), or 0 when the system
// does not say.
uint64_t PhysicalMemoryBytes();

}  // namespace pagedkv

#endif  // PAGEDKV_BASE_PHYSICAL_MEMORY_H_
