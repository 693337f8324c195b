// tensor/memory_resource.h
//
// MemoryResource is where tensor bytes come from: an abstract allocator of
// aligned host memory, in the spirit of std::pmr::memory_resource but with
// failure as a null pointer instead of an exception (the library never
// throws). Tensor takes one at creation and returns its bytes to the same
// resource; tests substitute counting or failing resources, and a later
// device or pinned-memory tier is one more subclass.
//
// Two resources ship: NewDeleteResource() (aligned operator new, below) and
// MimallocResource() (tensor/mimalloc_resource.h, the default).
//
// Example:
//
//   MemoryResource* resource = NewDeleteResource();
//   void* p = resource->Allocate(/*bytes=*/4096, /*alignment=*/64);
//   if (p == nullptr) return absl::ResourceExhaustedError("...");
//   resource->Deallocate(p, 4096, 64);
//
// Thread safety: implementations must allow concurrent Allocate and Deallocate
// calls from any threads, including freeing on a thread other than the one
// that allocated (caches are filled and freed from many threads).
// NewDeleteResource() does.
#ifndef PAGEDKV_TENSOR_MEMORY_RESOURCE_H_
#define PAGEDKV_TENSOR_MEMORY_RESOURCE_H_

#include <cstddef>

namespace pagedkv {

class MemoryResource {
 public:
  virtual ~MemoryResource() = default;

  // Returns `bytes` bytes aligned to `alignment`, or nullptr when the memory
  // cannot be had. `bytes` may be 0: the result is then a unique non-null
  // pointer (or nullptr on failure) that must still be passed to Deallocate.
  // REQUIRES: `alignment` is a power of two.
  virtual void* Allocate(size_t bytes, size_t alignment) = 0;

  // Returns memory to the resource.
  // REQUIRES: `p` came from Allocate(bytes, alignment) on this resource, with
  // the same `bytes` and `alignment`, and was not deallocated yet.
  // Deallocate(nullptr, ...) does nothing.
  virtual void Deallocate(void* p, size_t bytes, size_t alignment) = 0;
};

// Returns the process-lifetime resource backed by the aligned, non-throwing
// global operator new (so memory tools and operator-new replacements see it).
// It is never destroyed. It checks the power-of-two REQUIREMENT of Allocate
// with PKV_CHECK.
MemoryResource* NewDeleteResource();

}  // namespace pagedkv

#endif  // PAGEDKV_TENSOR_MEMORY_RESOURCE_H_
