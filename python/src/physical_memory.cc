#include "python/src/physical_memory.h"

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/physical_memory.h"
#include "python/src/status.h"

namespace pagedkv::python {

void CheckFitsInMemory(const char* what, size_t block_bytes,
                       int64_t num_blocks) {
  if (num_blocks <= 0 || block_bytes == 0) return;
  const uint64_t physical = ::pagedkv::PhysicalMemoryBytes();
  if (physical == 0) return;
  const uint64_t blocks = static_cast<uint64_t>(num_blocks);
  // blocks * block_bytes > physical, without overflowing the product.
  if (blocks <= physical / block_bytes) return;
  const long double gib = 1024.0L * 1024.0L * 1024.0L;
  throw StatusError(absl::ResourceExhaustedError(absl::StrCat(
      what, ": ", num_blocks, " blocks of ", block_bytes, " bytes need ",
      static_cast<double>(static_cast<long double>(blocks) * block_bytes / gib),
      " GiB, more than this machine's ",
      static_cast<double>(physical / gib),
      " GiB of physical memory (the pool would be overcommitted and the "
      "process killed when its bytes are touched)")));
}

}  // namespace pagedkv::python
