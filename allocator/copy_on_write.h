// allocator/copy_on_write.h
//
// CopyOp is the one instruction copy-on-write hands from the books
// (allocator/) to the bytes (cache/): "copy block src to block dst, all
// layers". BlockTable::PrepareWrite() returns one when a table is about to
// write into a block it shares; the cache carries it out with tensor_copy
// before writing. The allocator itself never moves KV bytes (vLLM v0 returned
// `blocks_to_copy` to its worker the same way).
//
// Example:
//
//   absl::StatusOr<std::optional<CopyOp>> op = table.PrepareWrite(last);
//   if (!op.ok()) return op.status();          // RESOURCE_EXHAUSTED.
//   if (op->has_value()) CopyBlock(storage, (*op)->src, (*op)->dst);
//
// Thread safety: a value type.
#ifndef PAGEDKV_ALLOCATOR_COPY_ON_WRITE_H_
#define PAGEDKV_ALLOCATOR_COPY_ON_WRITE_H_

#include <ostream>

#include "allocator/block_id.h"

namespace pagedkv {

struct CopyOp {
  BlockId src;  // The shared block whose bytes are copied.
  BlockId dst;  // The fresh private block that receives them.

  friend bool operator==(const CopyOp& a, const CopyOp& b) {
    return a.src == b.src && a.dst == b.dst;
  }
  friend bool operator!=(const CopyOp& a, const CopyOp& b) { return !(a == b); }
  friend std::ostream& operator<<(std::ostream& os, const CopyOp& op) {
    return os << "CopyOp{" << op.src << " -> " << op.dst << "}";
  }
};

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_COPY_ON_WRITE_H_
