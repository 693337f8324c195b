// tensor/mimalloc_resource.h
//
// MimallocResource() is the default source of tensor bytes: a MemoryResource
// over mimalloc's aligned allocation (mi_malloc_aligned / mi_free). mimalloc is
// fast for the many medium-sized, 64-byte-aligned blocks of KV storage and
// returns large frees to the OS promptly. This is the only target that links
// mimalloc (STYLE.md section 2).
//
// It deliberately uses mimalloc's thread-local default heaps, not a private
// mi_heap_new() heap: a mimalloc heap may only allocate from the thread that
// created it, while caches allocate from many threads. Memory allocated on one
// thread may be freed on any other.
//
// Example:
//
//   absl::StatusOr<Tensor> keys = Tensor::Create(
//       DType::kFloat16, Shape({2, 8, 1024, 64}), MimallocResource());
//   MemoryResource* resource = DefaultMemoryResource();  // Same resource.
//
// Thread safety: both resources are process-lifetime singletons; Allocate and
// Deallocate may be called concurrently from any threads.
#ifndef PAGEDKV_TENSOR_MIMALLOC_RESOURCE_H_
#define PAGEDKV_TENSOR_MIMALLOC_RESOURCE_H_

#include "tensor/memory_resource.h"

namespace pagedkv {

// Returns the process-lifetime mimalloc-backed resource (never destroyed).
// Allocate(0, a) returns a unique non-null pointer; Allocate returns nullptr
// when mimalloc cannot satisfy the request. Any power-of-two alignment is
// accepted (checked with PKV_CHECK).
MemoryResource* MimallocResource();

// Returns the resource Tensor::Create and KVPool use when none is given:
// MimallocResource(), except in ThreadSanitizer builds, where it is
// NewDeleteResource(). Debian's mimalloc is not built with -fsanitize=thread,
// so TSan cannot see its internal synchronisation and reports false races in
// it (and in every block it hands out across threads); the instrumented
// operator new lets users' threaded tests run under TSan unchanged.
MemoryResource* DefaultMemoryResource();

}  // namespace pagedkv

#endif  // PAGEDKV_TENSOR_MIMALLOC_RESOURCE_H_
