// python/src/manager_holder.h
//
// What a pagedkv.KVCacheManager object holds: the C++ manager, the last
// step's output and reusable scratch. Its own file so that manager.cc (the
// class and its core methods) and manager_groups.cc (the layer-group
// methods) can both register methods on the one class.
//
//   PyKVCacheManager& c = self.cast<PyKVCacheManager&>();
//   BusyGuard guard(c.busy, kManagerKind);
//   CheckRoom(out, c.SlotsFor(prompt_tokens));
//
// Thread safety: guarded by `busy` (busy.h); one call at a time.
#ifndef PAGEDKV_PYTHON_SRC_MANAGER_HOLDER_H_
#define PAGEDKV_PYTHON_SRC_MANAGER_HOLDER_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "python/src/busy.h"

namespace pagedkv::python {

// The Python class name, for BusyGuard's messages.
inline constexpr char kManagerKind[] = "KVCacheManager";

struct PyKVCacheManager {
  std::shared_ptr<BusyFlag> busy = std::make_shared<BusyFlag>();
  std::unique_ptr<KVCacheManager> manager;  // Never null.
  StepOutput out;                           // The last step's output.
  std::vector<SlotRequest> requests;        // Scratch, reused every step.
  std::vector<SequenceId> batch;            // Scratch for exports.
  std::vector<int32_t> token_ids;           // Scratch: the step's token ids.
  // The last swap_out / swap_in plan's SwapPlan::group_offsets (empty
  // without layer groups).
  std::vector<int32_t> swap_group_offsets;

  // Slot-mapping entries a step of `num_tokens` new tokens fills: one per
  // token per layer group (group-major, StepOutput::group_stride), one per
  // token without groups.
  int64_t SlotsFor(int64_t num_tokens) const {
    return std::max<int64_t>(num_tokens, 0) *
           std::max<int32_t>(manager->num_layer_groups(), 1);
  }
};

}  // namespace pagedkv::python

#endif  // PAGEDKV_PYTHON_SRC_MANAGER_HOLDER_H_
