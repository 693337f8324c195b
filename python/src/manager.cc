#include "python/src/manager.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "allocator/prefix/block_hash.h"
#include "allocator/prefix/prefix_event.h"
#include "cache/serving/block_table_export.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/layer_groups.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "pybind11/numpy.h"
#include "pybind11/pybind11.h"
#include "python/src/arrays.h"
#include "python/src/busy.h"
#include "python/src/manager_groups.h"
#include "python/src/manager_holder.h"
#include "python/src/physical_memory.h"
#include "python/src/status.h"
#include "python/src/typed_args.h"
#include "python/src/views.h"
#include "tensor/dtype.h"

namespace pagedkv::python {

namespace py = pybind11;

namespace {

// A 1-D integer array of token ids as int32: ValueError past int32, and
// ValueError (INVALID_ARGUMENT) for a negative id (vocabulary ids are
// >= 0, and a negative one would hash as a real token).
std::vector<int32_t> ToTokenIds(py::handle obj, const char* name) {
  const py::array_t<int64_t> a = ToInt64Array(obj, name);
  std::vector<int32_t> ids(static_cast<size_t>(a.size()));
  for (py::ssize_t i = 0; i < a.size(); ++i) {
    const int64_t v = a.data()[i];
    if (v < INT32_MIN || v > INT32_MAX) {
      throw py::value_error(
          absl::StrCat(name, "[", i, "]: ", v, " is past int32"));
    }
    if (v < 0) {
      ThrowInvalidArgument(absl::StrCat(name, "[", i, "]: ", v,
                                        " is negative (token ids are >= 0)"));
    }
    ids[static_cast<size_t>(i)] = static_cast<int32_t>(v);
  }
  return ids;
}

bool IsSequence(py::handle obj) {
  return py::isinstance<py::array>(obj) || py::isinstance<py::list>(obj) ||
         py::isinstance<py::tuple>(obj);
}

// ValueError (INVALID_ARGUMENT) naming `arg`, a prefix-caching argument,
// unless the manager caches prefixes: without it the argument would be
// silently ignored (the C++ AddSequence takes ids as a count then).
void RequirePrefixCaching(const PyKVCacheManager& c, const char* arg,
                          const char* hint = "") {
  if (c.manager->prefix_caching()) return;
  ThrowInvalidArgument(absl::StrCat(
      arg,
      ": only for a manager made with prefix_caching=True (this one "
      "has none",
      hint, ")"));
}

// A non-negative int32 option, or `fallback` for None. ValueError
// (INVALID_ARGUMENT) for a negative one.
int32_t NonNegativeOption(py::handle value, const char* name,
                          int32_t fallback) {
  if (value.is_none()) return fallback;
  const int32_t v = ToInt32(value, name);
  if (v < 0) ThrowInvalidArgument(absl::StrCat(name, ": ", v, " is negative"));
  return v;
}

// The checked (prompt_tokens, max_new_tokens) counts of can_admit and
// add_sequence: ValueError (INVALID_ARGUMENT) for prompt_tokens <= 0 or
// max_new_tokens < 0, as the C++ AddSequence (CanAdmit says kNever).
void CheckCounts(int64_t prompt_tokens, int64_t max_new_tokens) {
  if (prompt_tokens <= 0) {
    ThrowInvalidArgument(
        absl::StrCat("prompt_tokens: ", prompt_tokens, " (must be >= 1)"));
  }
  if (max_new_tokens < 0) {
    ThrowInvalidArgument(
        absl::StrCat("max_new_tokens: ", max_new_tokens, " is negative"));
  }
}

// The prefix keys of a `tenant_salt` argument (None: no salt). Only with
// token ids on a prefix-caching manager.
PrefixKeys SaltArg(const PyKVCacheManager& c, py::handle salt) {
  if (salt.is_none()) return {};
  RequirePrefixCaching(c, "tenant_salt");
  return {.tenant_salt = static_cast<uint64_t>(ToInt64(salt, "tenant_salt"))};
}

void RejectSaltWithCount(py::handle salt) {
  if (salt.is_none()) return;
  ThrowInvalidArgument(
      "tenant_salt: only with the prompt's token ids (a prompt given as a "
      "count is never cached)");
}

std::unique_ptr<PyKVCacheManager> MakeManager(
    IntArg num_layers, IntArg num_kv_heads, IntArg head_dim,
    RequiredDTypeArg dtype, IntArg num_blocks, IntArg block_tokens,
    StrArg storage_arg, StrArg admission_arg, double watermark,
    IntArg num_host_blocks, BoolArg prefix_caching_arg,
    OptionalStrArg hasher_arg, OptionalIntArg max_pending_events,
    LayerGroupsArg layer_groups, OptionalIntArg max_step_tokens) {
  const std::string storage = ToString(storage_arg, "storage");
  const std::string admission = ToString(admission_arg, "admission");
  const bool prefix_caching = ToBool(prefix_caching_arg, "prefix_caching");
  KVCacheManager::Options options;
  options.layout.num_layers = ToInt32(num_layers, "num_layers");
  options.layout.num_kv_heads = ToInt32(num_kv_heads, "num_kv_heads");
  options.layout.head_dim = ToInt32(head_dim, "head_dim");
  const std::optional<DType> parsed = ParseDTypeArg(dtype);
  if (!parsed.has_value()) throw py::type_error("dtype: required");
  options.layout.dtype = *parsed;
  options.layout.block_tokens = ToInt32(block_tokens, "block_tokens");
  options.num_blocks = ToInt32(num_blocks, "num_blocks");
  if (storage == "host") {
    options.storage = StorageMode::kHost;
  } else if (storage == "books_only") {
    options.storage = StorageMode::kBooksOnly;
  } else {
    throw py::value_error(
        absl::StrCat("storage: '", storage, "' (host or books_only)"));
  }
  if (admission == "watermark") {
    options.admission = AdmissionMode::kWatermark;
  } else if (admission == "reservation") {
    options.admission = AdmissionMode::kReservation;
  } else {
    throw py::value_error(absl::StrCat("admission: '", admission,
                                       "' (watermark or reservation)"));
  }
  options.watermark = watermark;
  options.num_host_blocks = ToInt32(num_host_blocks, "num_host_blocks");
  options.prefix_caching.enabled = prefix_caching;
  // Prefix-caching options without prefix caching would be ignored.
  for (auto [arg, name] :
       {std::pair<py::handle, const char*>{hasher_arg, "hasher"},
        std::pair<py::handle, const char*>{max_pending_events,
                                           "max_pending_events"}}) {
    if (!arg.is_none() && !prefix_caching) {
      ThrowInvalidArgument(absl::StrCat(
          name, ": only with prefix_caching=True (it would be ignored)"));
    }
  }
  const std::string hasher =
      hasher_arg.is_none() ? "xxh3" : ToString(hasher_arg, "hasher");
  if (hasher == "xxh3") {
    options.prefix_caching.hasher = &Xxh3BlockHasher();
  } else if (hasher == "sha256") {
    options.prefix_caching.hasher = &Sha256BlockHasher();
  } else {
    throw py::value_error(
        absl::StrCat("hasher: '", hasher, "' (xxh3 or sha256)"));
  }
  options.prefix_caching.max_pending_events =
      NonNegativeOption(max_pending_events, "max_pending_events", 0);
  options.layer_groups = ToLayerGroups(layer_groups);
  options.max_step_tokens =
      NonNegativeOption(max_step_tokens, "max_step_tokens", 0);
  if (!max_step_tokens.is_none() && options.layer_groups.empty()) {
    ThrowInvalidArgument(
        "max_step_tokens: only with layer_groups (it bounds a window "
        "group's reservation; it would be ignored)");
  }
  // Host mode allocates the device pool and the host tier at Create: check
  // their bytes against RAM first (physical_memory.h). A block holds one
  // group's layers with layer groups.
  if (options.storage == StorageMode::kHost && options.layout.Validate().ok() &&
      (options.layer_groups.empty() ||
       options.layer_groups[0].num_layers > 0)) {
    const size_t block_bytes =
        GroupBlockLayout(options.layout, options.layer_groups).block_bytes();
    CheckFitsInMemory("KVCacheManager (device pool and host tier)", block_bytes,
                      int64_t{options.num_blocks} +
                          std::max<int64_t>(options.num_host_blocks, 0));
  }
  auto holder = std::make_unique<PyKVCacheManager>();
  holder->manager = ValueOrThrow(KVCacheManager::Create(options));
  return holder;
}

// The last step's slot mapping: a new int64 array, or written into the
// caller's `out` (a writable C-contiguous int64 array with room) and
// returned as its prefix.
py::array SlotsResult(const StepOutput& out, py::handle out_array) {
  const auto n = static_cast<py::ssize_t>(out.slot_mapping.size());
  if (out_array.is_none()) {
    py::array_t<int64_t> slots(n);
    std::copy(out.slot_mapping.begin(), out.slot_mapping.end(),
              slots.mutable_data());
    return std::move(slots);
  }
  py::array array = py::reinterpret_borrow<py::array>(out_array);
  int64_t* dst = static_cast<int64_t*>(array.mutable_data());
  std::copy(out.slot_mapping.begin(), out.slot_mapping.end(), dst);
  return array[py::slice(0, n, 1)];
}

// Checks a caller's slot buffer before the call that fills it, so a bad
// buffer changes nothing.
void CheckSlotBuffer(py::handle out_array) {
  if (out_array.is_none()) return;
  if (!py::isinstance<py::array>(out_array)) {
    throw py::type_error("out: expected a numpy.ndarray of int64");
  }
  py::array array = py::reinterpret_borrow<py::array>(out_array);
  if (array.dtype().kind() != 'i' || array.dtype().itemsize() != 8 ||
      !array.dtype().attr("isnative").cast<bool>()) {
    throw py::type_error("out: expected dtype int64");
  }
  if (array.ndim() != 1 || !array.writeable() ||
      (array.flags() & py::array::c_style) == 0) {
    throw py::value_error("out: must be 1-D, writable and C-contiguous");
  }
}

void CheckRoom(py::handle out_array, size_t needed) {
  if (out_array.is_none()) return;
  const py::ssize_t size = py::reinterpret_borrow<py::array>(out_array).size();
  if (static_cast<size_t>(size) < needed) {
    throw py::value_error(
        absl::StrCat("out: ", size, " entries, need ", needed));
  }
}

// Fills c.batch with the sequence ids of `seqs` (1-D integers).
void LoadBatch(PyKVCacheManager& c, py::handle seqs) {
  const py::array_t<int64_t> ids = ToInt64Array(seqs, "seqs");
  c.batch.assign(ids.data(), ids.data() + ids.size());
}

py::array AppendSlots(PyKVCacheManager& c, IntsArg seqs,
                      IntOrIntsArg num_tokens, OptionalArrayArg out_array,
                      OptionalIntsArg token_ids, OptionalIntsArg commit) {
  BusyGuard guard(c.busy, kManagerKind);
  CheckSlotBuffer(out_array);
  const py::array_t<int64_t> ids = ToInt64Array(seqs, "seqs");
  const int64_t n = ids.size();
  c.requests.resize(static_cast<size_t>(n));
  const int64_t* id = ids.data();
  if (py::isinstance<py::array>(num_tokens) ||
      py::isinstance<py::list>(num_tokens) ||
      py::isinstance<py::tuple>(num_tokens)) {
    const py::array_t<int64_t> counts = ToInt64Array(num_tokens, "num_tokens");
    if (counts.size() != n) {
      throw py::value_error(absl::StrCat("num_tokens: ", counts.size(),
                                         " entries for ", n, " sequences"));
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = counts.data()[i];
      if (t < INT32_MIN || t > INT32_MAX) {
        throw py::value_error(
            absl::StrCat("num_tokens: ", t, " is past int32"));
      }
      c.requests[i] = {id[i], static_cast<int32_t>(t)};
    }
  } else {
    const int32_t t = ToInt32(num_tokens, "num_tokens");
    for (int64_t i = 0; i < n; ++i) c.requests[i] = {id[i], t};
  }
  // The caller's buffer is checked before the call, so a small one changes
  // nothing (a negative count fails in C++ first, also changing nothing).
  // With layer groups the step fills one run of `total` slots per group.
  int64_t total = 0;
  for (const SlotRequest& r : c.requests)
    total += r.num_tokens > 0 ? r.num_tokens : 0;
  CheckRoom(out_array, static_cast<size_t>(c.SlotsFor(total)));
  // Prefix caching: every request's token ids, concatenated in order, and
  // a commit point per sequence (-1: leave it).
  if (!token_ids.is_none()) {
    RequirePrefixCaching(c, "token_ids");
    c.token_ids = ToTokenIds(token_ids, "token_ids");
    if (static_cast<int64_t>(c.token_ids.size()) != total) {
      throw py::value_error(absl::StrCat("token_ids: ", c.token_ids.size(),
                                         " ids for ", total, " new tokens"));
    }
    size_t at = 0;
    for (SlotRequest& r : c.requests) {
      const size_t k = static_cast<size_t>(std::max(r.num_tokens, 0));
      r.token_ids = absl::MakeConstSpan(c.token_ids.data() + at, k);
      at += k;
    }
  }
  if (!commit.is_none()) {
    RequirePrefixCaching(c, "commit");
    const py::array_t<int64_t> points = ToInt64Array(commit, "commit");
    if (points.size() != n) {
      throw py::value_error(absl::StrCat("commit: ", points.size(),
                                         " entries for ", n, " sequences"));
    }
    for (int64_t i = 0; i < n; ++i) c.requests[i].commit = points.data()[i];
  }
  absl::Status status;
  {
    py::gil_scoped_release release;
    status = c.manager->AppendSlots(c.requests, &c.out);
  }
  ThrowIfError(status);
  return SlotsResult(c.out, out_array);
}

py::array PlanArray(const std::vector<BlockId>& ids) {
  py::array_t<int32_t> a(static_cast<py::ssize_t>(ids.size()));
  for (size_t i = 0; i < ids.size(); ++i) a.mutable_data()[i] = ids[i].value();
  return std::move(a);
}

const char* AdmissionName(Admission a) {
  switch (a) {
    case Admission::kAdmit:
      return "admit";
    case Admission::kLater:
      return "later";
    case Admission::kNever:
      return "never";
  }
  return "never";
}

}  // namespace

void RegisterManager(py::module_& m) {
  py::class_<PyKVCacheManager> cls(m, "KVCacheManager", R"doc(
The serving block manager (vLLM-style): sequences keyed by int ids, one
append_slots call per step for every running sequence, exports into
caller-owned int32 arrays.

KVCacheManager(*, num_layers, num_kv_heads, head_dim, dtype, num_blocks,
               block_tokens=16, storage="host"|"books_only",
               admission="watermark"|"reservation", watermark=0.01,
               num_host_blocks=0, prefix_caching=False,
               hasher="xxh3"|"sha256", max_pending_events=0,
               layer_groups=None, max_step_tokens=0)

layer_groups: a list of (num_layers, sliding_window) pairs,
0 for full attention (manager_groups.h); slots are then group-major and
tables are read per group (group_table, export_dense_group).
)doc");
  cls.def(py::init(&MakeManager), py::kw_only(), py::arg("num_layers"),
          py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("dtype"),
          py::arg("num_blocks"), py::arg("block_tokens") = 16,
          py::arg("storage") = "host", py::arg("admission") = "watermark",
          py::arg("watermark") = 0.01, py::arg("num_host_blocks") = 0,
          py::arg("prefix_caching") = false, py::arg("hasher") = py::none(),
          py::arg("max_pending_events") = py::none(),
          py::arg("layer_groups") = py::none(),
          py::arg("max_step_tokens") = py::none(),
          "See the class docstring. ValueError (INVALID_ARGUMENT) for a bad "
          "layout or option and for an option the configuration would "
          "ignore (hasher / max_pending_events without prefix_caching, "
          "max_step_tokens without layer_groups); MemoryError when host "
          "storage exceeds physical memory.")
      .def(
          "can_admit",
          [](PyKVCacheManager& c, IntOrIntsArg prompt, IntArg max_new,
             OptionalIntArg salt) {
            BusyGuard guard(c.busy, kManagerKind);
            const int64_t max_new_tokens = ToInt64(max_new, "max_new_tokens");
            if (IsSequence(prompt)) {
              RequirePrefixCaching(c, "prompt_tokens (token ids)",
                                   "; give the prompt as a count");
              const std::vector<int32_t> ids =
                  ToTokenIds(prompt, "prompt_tokens");
              const PrefixKeys keys = SaltArg(c, salt);
              CheckCounts(static_cast<int64_t>(ids.size()), max_new_tokens);
              return AdmissionName(
                  c.manager->CanAdmit(ids, max_new_tokens, keys));
            }
            RejectSaltWithCount(salt);
            const int64_t prompt_tokens = ToInt64(prompt, "prompt_tokens");
            CheckCounts(prompt_tokens, max_new_tokens);
            return AdmissionName(
                c.manager->CanAdmit(prompt_tokens, max_new_tokens));
          },
          py::arg("prompt_tokens"), py::arg("max_new_tokens") = 0,
          py::kw_only(), py::arg("tenant_salt") = py::none(),
          "'admit', 'later' or 'never'. prompt_tokens: a count, or the "
          "prompt's token ids (prefix caching counts its cached blocks).")
      .def(
          "add_sequence",
          [](PyKVCacheManager& c, IntArg seq, IntOrIntsArg prompt,
             IntArg max_new, OptionalArrayArg out_array, OptionalIntArg salt) {
            BusyGuard guard(c.busy, kManagerKind);
            CheckSlotBuffer(out_array);
            if (IsSequence(prompt)) {
              RequirePrefixCaching(c, "prompt_tokens (token ids)",
                                   "; give the prompt as a count");
              const std::vector<int32_t> ids =
                  ToTokenIds(prompt, "prompt_tokens");
              const PrefixKeys keys = SaltArg(c, salt);
              CheckRoom(out_array, static_cast<size_t>(c.SlotsFor(
                                       static_cast<int64_t>(ids.size()))));
              ThrowIfError(c.manager->AddSequence(
                  ToInt64(seq, "seq"), ids, ToInt64(max_new, "max_new_tokens"),
                  &c.out, keys));
              return SlotsResult(c.out, out_array);
            }
            RejectSaltWithCount(salt);
            const int64_t prompt_tokens = ToInt64(prompt, "prompt_tokens");
            CheckRoom(out_array,
                      static_cast<size_t>(c.SlotsFor(prompt_tokens)));
            ThrowIfError(c.manager->AddSequence(
                ToInt64(seq, "seq"), prompt_tokens,
                ToInt64(max_new, "max_new_tokens"), &c.out));
            return SlotsResult(c.out, out_array);
          },
          py::arg("seq"), py::arg("prompt_tokens"),
          py::arg("max_new_tokens") = 0, py::kw_only(),
          py::arg("out") = py::none(), py::arg("tenant_salt") = py::none(),
          "Admits seq; returns the int64 slots of the prompt tokens to "
          "compute. prompt_tokens: a count, or the token ids (prefix "
          "caching: the first num_cached_tokens come from the cache and "
          "get no slots).")
      .def_property_readonly(
          "num_cached_tokens",
          [](PyKVCacheManager& c) {
            BusyGuard guard(c.busy, kManagerKind);
            return c.out.num_cached_tokens;
          },
          "Leading tokens the last add_sequence / readmit served from the "
          "prefix cache.")
      .def(
          "commit_tokens",
          [](PyKVCacheManager& c, IntsArg seqs, IntsArg num_tokens,
             LateTokenIdsArg token_ids) {
            BusyGuard guard(c.busy, kManagerKind);
            const py::array_t<int64_t> ids = ToInt64Array(seqs, "seqs");
            const py::array_t<int64_t> counts =
                ToInt64Array(num_tokens, "num_tokens");
            if (counts.size() != ids.size()) {
              throw py::value_error(absl::StrCat("num_tokens: ", counts.size(),
                                                 " entries for ", ids.size(),
                                                 " sequences"));
            }
            // Per sequence, the ids the manager lacks (None: none).
            std::vector<std::vector<int32_t>> late(
                static_cast<size_t>(ids.size()));
            if (!token_ids.is_none()) {
              if (!py::isinstance<py::sequence>(token_ids) ||
                  static_cast<py::ssize_t>(py::len(token_ids)) != ids.size()) {
                throw py::value_error(absl::StrCat(
                    "token_ids: a list of one id array (or None) per "
                    "sequence, ",
                    ids.size(), " of them"));
              }
              const py::sequence lists =
                  py::reinterpret_borrow<py::sequence>(token_ids);
              for (py::ssize_t i = 0; i < ids.size(); ++i) {
                const py::object item = lists[static_cast<size_t>(i)];
                if (!item.is_none()) late[i] = ToTokenIds(item, "token_ids");
              }
            }
            std::vector<TokenCommit> commits(static_cast<size_t>(ids.size()));
            for (py::ssize_t i = 0; i < ids.size(); ++i) {
              commits[i] = {ids.data()[i], counts.data()[i], late[i]};
            }
            ThrowIfError(c.manager->CommitTokens(commits));
          },
          py::arg("seqs"), py::arg("num_tokens"), py::kw_only(),
          py::arg("token_ids") = py::none(),
          "Prefix caching: tokens [0, n) of each sequence are written and "
          "final; their full blocks whose ids are known become matchable. "
          "token_ids: per sequence the ids its steps left out (a server "
          "that keeps them gives them here, at the end), or None.")
      .def(
          "take_events",
          [](PyKVCacheManager& c) {
            BusyGuard guard(c.busy, kManagerKind);
            py::list out;
            for (const PrefixEvent& e : c.manager->TakeEvents()) {
              py::dict d;
              d["kind"] = e.kind == PrefixEvent::Kind::kBlockStored
                              ? "BlockStored"
                          : e.kind == PrefixEvent::Kind::kBlockRemoved
                              ? "BlockRemoved"
                              : "AllBlocksCleared";
              d["sequence_number"] = e.sequence_number;
              py::list hashes;
              for (BlockHash h : e.block_hashes) hashes.append(h);
              d["block_hashes"] = hashes;
              d["parent_hash"] = e.parent_hash;
              py::list tokens;
              for (int32_t t : e.token_ids) tokens.append(t);
              d["token_ids"] = tokens;
              d["block_size"] = e.block_size;
              // vLLM's shape: one entry per block, None when the block has
              // no extra keys, else a dict of the three.
              py::list extra;
              for (const BlockExtraKeys& k : e.extra_keys) {
                if (k.is_zero()) {
                  extra.append(py::none());
                  continue;
                }
                py::dict keys;
                keys["tenant_salt"] = k.tenant_salt;
                keys["adapter_id"] = k.adapter_id;
                keys["multimodal_digest"] = k.multimodal_digest;
                extra.append(std::move(keys));
              }
              d["extra_keys"] = extra;
              out.append(std::move(d));
            }
            return out;
          },
          R"doc(Prefix caching: the events since the last call, dicts
shaped like vLLM's KV events: kind ("BlockStored", "BlockRemoved",
"AllBlocksCleared"), sequence_number, block_hashes, parent_hash,
token_ids (block_size per block, concatenated), block_size and extra_keys:
per stored block None (no salt, adapter or multimodal input) or
{"tenant_salt", "adapter_id", "multimodal_digest"} as unsigned 64-bit
ints (a negative tenant_salt comes back modulo 2**64).)doc")
      .def(
          "reset_prefix_cache",
          [](PyKVCacheManager& c) {
            BusyGuard guard(c.busy, kManagerKind);
            c.manager->ResetPrefixCache();
          },
          "Prefix caching: makes every cached block unmatchable.")
      .def("append_slots", &AppendSlots, py::arg("seqs"),
           py::arg("num_tokens") = 1, py::kw_only(),
           py::arg("out") = py::none(), py::arg("token_ids") = py::none(),
           py::arg("commit") = py::none(),
           R"doc(Slots for every sequence's new tokens in one call (all or
nothing). seqs: 1-D integer array; num_tokens: an int for all or one per
sequence. Returns the int64 slot mapping (block * block_tokens + offset).
Prefix caching: token_ids, every request's new token ids concatenated;
commit, per sequence the tokens now final (-1 leaves it).)doc")
      .def_property_readonly(
          "request_offsets",
          [](PyKVCacheManager& c) {
            BusyGuard guard(c.busy, kManagerKind);
            py::array_t<int32_t> a(
                static_cast<py::ssize_t>(c.out.request_offsets.size()));
            std::copy(c.out.request_offsets.begin(),
                      c.out.request_offsets.end(), a.mutable_data());
            return a;
          },
          "int32 offsets of each request's slots in the last step.")
      .def_property_readonly(
          "copies",
          [](PyKVCacheManager& c) {
            BusyGuard guard(c.busy, kManagerKind);
            absl::Span<const CopyOp> ops = c.out.copies.ops();
            py::array_t<int32_t> a(
                {static_cast<py::ssize_t>(ops.size()), py::ssize_t{2}});
            for (size_t i = 0; i < ops.size(); ++i) {
              a.mutable_data()[2 * i] = ops[i].src.value();
              a.mutable_data()[2 * i + 1] = ops[i].dst.value();
            }
            return a;
          },
          "(n, 2) int32 [src, dst] copy-on-write copies of the last step "
          "(books-only: run them, then mark_copies_done()).")
      .def(
          "mark_copies_done",
          [](PyKVCacheManager& c) {
            BusyGuard guard(c.busy, kManagerKind);
            c.out.copies.MarkDone();
          },
          "Books-only: the caller ran the last step's copies.")
      .def(
          "fork",
          [](PyKVCacheManager& c, IntArg parent, IntArg child) {
            BusyGuard guard(c.busy, kManagerKind);
            ThrowIfError(c.manager->Fork(ToInt64(parent, "parent"),
                                         ToInt64(child, "child")));
          },
          py::arg("parent"), py::arg("child"),
          "Child shares every block of running parent (copy-on-write). "
          "KeyError for an unknown parent, ValueError for a child id in "
          "use, RuntimeError unless parent runs, MemoryError when a "
          "reservation does not fit.")
      .def(
          "free",
          [](PyKVCacheManager& c, IntArg seq) {
            BusyGuard guard(c.busy, kManagerKind);
            ThrowIfError(c.manager->Free(ToInt64(seq, "seq")));
          },
          py::arg("seq"),
          "Drops seq and releases its blocks. KeyError for an unknown id; "
          "RuntimeError while a books-only swap is pending.")
      .def(
          "truncate",
          [](PyKVCacheManager& c, IntArg seq, IntArg new_length) {
            BusyGuard guard(c.busy, kManagerKind);
            const int64_t length = ToInt64(new_length, "new_length");
            // A negative length is a bad value (ValueError), not a position
            // past the sequence (the C++ OUT_OF_RANGE, IndexError).
            if (length < 0) {
              ThrowInvalidArgument(
                  absl::StrCat("new_length: ", length, " is negative"));
            }
            ThrowIfError(c.manager->Truncate(ToInt64(seq, "seq"), length));
          },
          py::arg("seq"), py::arg("new_length"),
          "Keeps the first new_length tokens of running seq and frees the "
          "whole blocks past them (speculative rollback). ValueError for "
          "new_length < 0, IndexError past num_tokens(seq).")
      .def(
          "preempt",
          [](PyKVCacheManager& c, IntArg seq) {
            BusyGuard guard(c.busy, kManagerKind);
            ThrowIfError(c.manager->Preempt(ToInt64(seq, "seq")));
          },
          py::arg("seq"),
          "Recompute preemption: frees seq's blocks and keeps its length "
          "(readmit gives it slots again). KeyError; RuntimeError unless "
          "running.")
      .def(
          "readmit",
          [](PyKVCacheManager& c, IntArg seq, OptionalArrayArg out_array) {
            BusyGuard guard(c.busy, kManagerKind);
            CheckSlotBuffer(out_array);
            const int64_t id = ToInt64(seq, "seq");
            if (!out_array.is_none()) {
              CheckRoom(out_array, static_cast<size_t>(c.SlotsFor(ValueOrThrow(
                                       c.manager->num_tokens(id)))));
            }
            ThrowIfError(c.manager->Readmit(id, &c.out));
            return SlotsResult(c.out, out_array);
          },
          py::arg("seq"), py::kw_only(), py::arg("out") = py::none(),
          "Gives preempted seq slots for its remembered tokens again "
          "(int64 slot mapping; prefix caching serves num_cached_tokens "
          "of them from the cache). RuntimeError unless preempted; "
          "MemoryError (still preempted) when it does not fit.")
      .def(
          "swap_out",
          [](PyKVCacheManager& c, IntArg seq) {
            BusyGuard guard(c.busy, kManagerKind);
            SwapPlan plan =
                ValueOrThrow(c.manager->SwapOut(ToInt64(seq, "seq")));
            c.swap_group_offsets = plan.group_offsets;
            return py::make_tuple(PlanArray(plan.src), PlanArray(plan.dst));
          },
          py::arg("seq"),
          "(src, dst) int32 block copies (books-only; with layer groups "
          "swap_group_offsets splits them per group).")
      .def(
          "swap_in",
          [](PyKVCacheManager& c, IntArg seq) {
            BusyGuard guard(c.busy, kManagerKind);
            SwapPlan plan =
                ValueOrThrow(c.manager->SwapIn(ToInt64(seq, "seq")));
            c.swap_group_offsets = plan.group_offsets;
            return py::make_tuple(PlanArray(plan.src), PlanArray(plan.dst));
          },
          py::arg("seq"),
          "Brings a swapped-out seq back: (src, dst) int32 host -> device "
          "block copies (books-only; empty in host mode). RuntimeError "
          "unless swapped out; MemoryError when the device pool is full.")
      .def_property_readonly(
          "swap_group_offsets",
          [](PyKVCacheManager& c) {
            BusyGuard guard(c.busy, kManagerKind);
            py::array_t<int32_t> a(
                static_cast<py::ssize_t>(c.swap_group_offsets.size()));
            std::copy(c.swap_group_offsets.begin(), c.swap_group_offsets.end(),
                      a.mutable_data());
            return a;
          },
          "Layer groups: the last swap plan's split, G + 1 int32 offsets "
          "(group g's pairs are [offsets[g], offsets[g + 1])); empty "
          "without groups.")
      .def(
          "complete_swap",
          [](PyKVCacheManager& c, IntArg seq) {
            BusyGuard guard(c.busy, kManagerKind);
            ThrowIfError(c.manager->CompleteSwap(ToInt64(seq, "seq")));
          },
          py::arg("seq"),
          "Books-only: the caller ran the pending swap's copies; releases "
          "the source blocks. RuntimeError unless a swap is pending.")
      .def(
          "__contains__",
          [](PyKVCacheManager& c, IntArg seq) {
            BusyGuard guard(c.busy, kManagerKind);
            return c.manager->contains(ToInt64(seq, "seq"));
          },
          py::arg("seq"), "Whether the manager knows seq (in any state).")
      .def(
          "state",
          [](PyKVCacheManager& c, IntArg seq) {
            BusyGuard guard(c.busy, kManagerKind);
            return std::string(SequenceStateName(
                ValueOrThrow(c.manager->state(ToInt64(seq, "seq")))));
          },
          py::arg("seq"),
          "The sequence's state (str): \"running\", \"preempted\", "
          "\"swapped out\", \"swapping out\", \"swapping in\", ... KeyError "
          "for an unknown id.")
      .def(
          "num_tokens",
          [](PyKVCacheManager& c, IntArg seq) {
            BusyGuard guard(c.busy, kManagerKind);
            return ValueOrThrow(c.manager->num_tokens(ToInt64(seq, "seq")));
          },
          py::arg("seq"),
          "Tokens the sequence holds (int). KeyError for an unknown id.")
      .def(
          "block_table",
          [](PyKVCacheManager& c, IntArg seq) {
            BusyGuard guard(c.busy, kManagerKind);
            absl::Span<const BlockId> blocks =
                ValueOrThrow(c.manager->block_table(ToInt64(seq, "seq")));
            py::array_t<int32_t> a(static_cast<py::ssize_t>(blocks.size()));
            for (size_t i = 0; i < blocks.size(); ++i) {
              a.mutable_data()[i] = blocks[i].value();
            }
            return a;
          },
          py::arg("seq"), "int32 copy of a running sequence's block table.")
      .def(
          "export_sizes",
          [](PyKVCacheManager& c, IntsArg seqs) {
            BusyGuard guard(c.busy, kManagerKind);
            LoadBatch(c, seqs);
            const ExportSizes s =
                ValueOrThrow(ComputeExportSizes(*c.manager, c.batch));
            py::dict d;
            d["num_seqs"] = s.num_seqs;
            d["max_row_blocks"] = s.max_row_blocks;
            d["total_blocks"] = s.total_blocks;
            return d;
          },
          py::arg("seqs"),
          "dict num_seqs, max_row_blocks, total_blocks: the array sizes "
          "export_dense / export_csr need for seqs.")
      .def(
          "export_dense",
          [](PyKVCacheManager& c, IntsArg seqs, ArrayArg block_tables,
             ArrayArg seq_lens, IntArg pad_id) {
            BusyGuard guard(c.busy, kManagerKind);
            LoadBatch(c, seqs);
            const int64_t width =
                CallerInt32RowWidth(block_tables, "block_tables", "max_blocks");
            DenseExportOptions options;
            options.max_blocks = ToInt32(py::int_(width), "max_blocks");
            options.pad_id = ToInt32(pad_id, "pad_id");
            absl::Span<int32_t> tables =
                CallerInt32Buffer(block_tables, "block_tables", 0);
            absl::Span<int32_t> lens =
                CallerInt32Buffer(seq_lens, "seq_lens", 0);
            absl::Status status;
            {
              py::gil_scoped_release release;
              status = ExportDenseBlockTables(*c.manager, c.batch, options,
                                              tables, lens);
            }
            ThrowIfError(status);
          },
          py::arg("seqs"), py::arg("block_tables"), py::arg("seq_lens"),
          py::kw_only(), py::arg("pad_id") = 0,
          "vLLM's dense block_tables (rows, max_blocks) and seq_lens, into "
          "the caller's int32 arrays.")
      .def(
          "export_csr",
          [](PyKVCacheManager& c, IntsArg seqs, ArrayArg indptr,
             ArrayArg indices, ArrayArg last_page_len) {
            BusyGuard guard(c.busy, kManagerKind);
            LoadBatch(c, seqs);
            absl::Span<int32_t> p = CallerInt32Buffer(indptr, "kv_indptr", 0);
            absl::Span<int32_t> i = CallerInt32Buffer(indices, "kv_indices", 0);
            absl::Span<int32_t> l =
                CallerInt32Buffer(last_page_len, "kv_last_page_len", 0);
            absl::Status status;
            {
              py::gil_scoped_release release;
              status = ExportCsrPageTable(*c.manager, c.batch, p, i, l);
            }
            ThrowIfError(status);
          },
          py::arg("seqs"), py::arg("kv_indptr"), py::arg("kv_indices"),
          py::arg("kv_last_page_len"),
          "FlashInfer's CSR page table, into the caller's int32 arrays.")
      .def_property_readonly(
          "kv_storage",
          [](py::object self) -> OptionalArrayArg {
            PyKVCacheManager& c = self.cast<PyKVCacheManager&>();
            KVPool* pool = c.manager->kv_pool();
            if (pool == nullptr) return py::none();
            return PoolStorageArray(*pool, self, /*writable=*/true);
          },
          "Host mode: zero-copy numpy view (num_blocks, num_layers, 2, "
          "num_kv_heads, block_tokens, head_dim) of the device pool; keeps "
          "the manager alive. None in books-only mode.")
      .def_property_readonly(
          "block_tokens",
          [](PyKVCacheManager& c) { return c.manager->block_tokens(); },
          "Tokens per block (int).")
      .def_property_readonly("num_free_blocks",
                             [](PyKVCacheManager& c) {
                               BusyGuard guard(c.busy, kManagerKind);
                               return c.manager->books().num_free_blocks();
                             },
                             "Device blocks free now (int).")
      .def("stats",
           [](PyKVCacheManager& c) {
             BusyGuard guard(c.busy, kManagerKind);
             const ManagerStats s = c.manager->stats();
             py::dict d;
             d["num_blocks"] = s.num_blocks;
             d["used_blocks"] = s.used_blocks;
             d["free_blocks"] = s.free_blocks;
             d["reserved_blocks"] = s.reserved_blocks;
             d["shared_blocks"] = s.shared_blocks;
             d["num_sequences"] = s.num_sequences;
             d["running_sequences"] = s.running_sequences;
             d["preemptions"] = s.preemptions;
             d["swap_outs"] = s.swap_outs;
             d["swap_ins"] = s.swap_ins;
             d["swapped_blocks"] = s.swapped_blocks;
             d["cow_copies"] = s.cow_copies;
             d["host_blocks"] = s.host_blocks;
             d["host_used_blocks"] = s.host_used_blocks;
             py::dict p;
             p["queries"] = s.prefix.queries;
             p["query_tokens"] = s.prefix.query_tokens;
             p["hit_tokens"] = s.prefix.hit_tokens;
             p["hit_rate"] = s.prefix.hit_rate();
             p["hit_blocks"] = s.prefix.hit_blocks;
             p["rehit_blocks"] = s.prefix.rehit_blocks;
             p["switched_blocks"] = s.prefix.switched_blocks;
             p["cached_blocks"] = s.prefix.cached_blocks;
             p["evictable_blocks"] = s.prefix.evictable_blocks;
             p["evicted_blocks"] = s.prefix.evicted_blocks;
             d["prefix"] = p;
             return d;
           },
           "dict of counters: num_blocks, used_blocks, free_blocks, "
           "reserved_blocks, shared_blocks, num_sequences, "
           "running_sequences, preemptions, swap_outs, swap_ins, "
           "swapped_blocks, cow_copies, host_blocks, host_used_blocks, and "
           "\"prefix\": a dict of the prefix cache's (queries, "
           "query_tokens, hit_tokens, hit_rate, hit_blocks, rehit_blocks, "
           "switched_blocks, cached_blocks, evictable_blocks, "
           "evicted_blocks; zero without prefix caching).")
      .def(
          "check_invariants",
          [](PyKVCacheManager& c) {
            BusyGuard guard(c.busy, kManagerKind);
            c.manager->CheckInvariants();
          },
          "Aborts the process if the manager's books are inconsistent (a "
          "bug; for tests).")
      .def(
          "__repr__",
          [](PyKVCacheManager& c) {
            BusyGuard guard(c.busy, kManagerKind);
            const ManagerStats s = c.manager->stats();
            return absl::StrCat(
                "KVCacheManager(", c.manager->layout().ToString(),
                " num_blocks=", s.num_blocks, " free_blocks=", s.free_blocks,
                " sequences=", s.num_sequences,
                c.manager->prefix_caching() ? " prefix_caching" : "",
                c.manager->num_layer_groups() > 0
                    ? absl::StrCat(" layer_groups=",
                                   c.manager->num_layer_groups())
                    : "",
                ")");
          },
          "KVCacheManager(layers=... num_blocks=... free_blocks=... "
          "sequences=...)");
  AddLayerGroupMethods(cls);
}

}  // namespace pagedkv::python
