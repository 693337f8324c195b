#include "tensor/mimalloc_resource.h"

#include <cstddef>

#include "absl/base/config.h"
#include "base/check.h"
#include "mimalloc.h"
#include "tensor/memory_resource.h"

namespace pagedkv {
namespace {

class MimallocMemoryResource final : public MemoryResource {
 public:
  void* Allocate(size_t bytes, size_t alignment) override {
    PKV_CHECK(alignment != 0 && (alignment & (alignment - 1)) == 0,
              "alignment %d is not a power of two", alignment);
    return mi_malloc_aligned(bytes, alignment);
  }

  void Deallocate(void* p, size_t bytes, size_t alignment) override {
    // mi_free_size_aligned checks size and alignment in mimalloc debug builds
    // and is mi_free otherwise. Null is a no-op.
    mi_free_size_aligned(p, bytes, alignment);
  }
};

}  // namespace

MemoryResource* MimallocResource() {
  // Leaked on purpose: tensors with static storage duration may be destroyed
  // after any function-local static would be.
  static MemoryResource* const resource = new MimallocMemoryResource();
  return resource;
}

MemoryResource* DefaultMemoryResource() {
#ifdef ABSL_HAVE_THREAD_SANITIZER
  return NewDeleteResource();
#else
  return MimallocResource();
#endif
}

}  // namespace pagedkv
