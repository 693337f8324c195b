// python/src/physical_memory.h
//
// The binding's up-front check that a pool's bytes fit in the machine. The
// C++ pools allocate their storage at creation, and Linux overcommits: a
// pool far larger than RAM is "created" and the process is OOM-killed when
// the bytes are touched (pool.storage, the first updates). From Python that
// kills the interpreter with no exception, so the binding refuses such a
// pool first with MemoryError (RESOURCE_EXHAUSTED, as a full pool), naming
// the bytes asked for and the machine's physical memory. The C++ library is
// unchanged: a server embedding it sizes its pools itself.
//
//   CheckFitsInMemory("KVPool", layout.block_bytes(), num_blocks);
//
// Thread safety: call with the GIL held (it raises).
#ifndef PAGEDKV_PYTHON_SRC_PHYSICAL_MEMORY_H_
#define PAGEDKV_PYTHON_SRC_PHYSICAL_MEMORY_H_

#include <cstddef>
#include <cstdint>

namespace pagedkv::python {

// Raises MemoryError (status_code "RESOURCE_EXHAUSTED") when num_blocks
// blocks of block_bytes (their product, without overflow) exceed
// PhysicalMemoryBytes() (base/physical_memory.h); `what` names the pool in the
// message. Does nothing for num_blocks <= 0 (the C++ Create reports that) or
// when the physical size is unknown.
void CheckFitsInMemory(const char* what, size_t block_bytes,
                       int64_t num_blocks);

}  // namespace pagedkv::python

#endif  // PAGEDKV_PYTHON_SRC_PHYSICAL_MEMORY_H_
