#include "tensor/memory_resource.h"

#include <cstddef>
#include <new>

#include "base/check.h"

namespace pagedkv {
namespace {

class NewDeleteMemoryResource final : public MemoryResource {
 public:
  void* Allocate(size_t bytes, size_t alignment) override {
    PKV_CHECK(alignment != 0 && (alignment & (alignment - 1)) == 0,
              "alignment %d is not a power of two", alignment);
    // operator new(0) already returns a unique non-null pointer.
    return ::operator new (bytes, std::align_val_t{alignment}, std::nothrow);
  }

  void Deallocate(void* p, size_t /*bytes*/, size_t alignment) override {
    if (p == nullptr) return;
    // The unsized form: clang does not declare sized deallocation by default.
    ::operator delete (p, std::align_val_t{alignment});
  }
};

}  // namespace

MemoryResource* NewDeleteResource() {
  // Leaked on purpose: tensors with static storage duration may outlive any
  // destruction order we could pick.
  static MemoryResource* const resource = new NewDeleteMemoryResource();
  return resource;
}

}  // namespace pagedkv
