// tools/kv_stress/flag_help.cc
#include "tools/kv_stress/flag_help.h"

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/check.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"
#include "tools/kv_stress/policy.h"
#include "tools/kv_stress/simulator.h"
#include "tools/kv_stress/workload.h"

namespace pagedkv::kv_stress {
namespace {

// One preset-backed flag: its name, the default that stands for "the
// preset's value" as --help prints it, and how to print a preset's value.
struct PresetField {
  std::string_view flag_name;
  std::string (*value)(const SimConfig& c);
  std::string_view unset = "-1";
};

constexpr std::string_view kEmpty = "\"\"";

// In the order kv_stress declares its flags. Keep in step with
// ConfigFromFlags() in kv_stress_main.cc.
constexpr PresetField kFields[] = {
    {"steps", [](const SimConfig& c) { return absl::StrCat(c.steps); }},
    {"pool_mb",
     [](const SimConfig& c) {
       return absl::StrCat(static_cast<double>(c.pool_bytes()) / (1 << 20));
     }},
    {"pool_blocks",
     [](const SimConfig& c) { return absl::StrCat(c.pool_blocks); }},
    {"layers",
     [](const SimConfig& c) { return absl::StrCat(c.layout.num_layers); }},
    {"kv_heads",
     [](const SimConfig& c) { return absl::StrCat(c.layout.num_kv_heads); }},
    {"head_dim",
     [](const SimConfig& c) { return absl::StrCat(c.layout.head_dim); }},
    {"dtype",
     [](const SimConfig& c) { return std::string(DTypeName(c.layout.dtype)); },
     kEmpty},
    {"block_tokens",
     [](const SimConfig& c) { return absl::StrCat(c.layout.block_tokens); }},
    {"max_len", [](const SimConfig& c) { return absl::StrCat(c.max_len); }},
    {"arrival_rate",
     [](const SimConfig& c) {
       return absl::StrCat(c.workload.arrivals_per_step);
     }},
    {"prompt_dist",
     [](const SimConfig& c) {
       return std::string(LengthDistName(c.workload.prompt.dist));
     },
     kEmpty},
    {"prompt_median",
     [](const SimConfig& c) { return absl::StrCat(c.workload.prompt.median); }},
    {"prompt_sigma",
     [](const SimConfig& c) { return absl::StrCat(c.workload.prompt.sigma); }},
    {"prompt_max",
     [](const SimConfig& c) {
       return absl::StrCat(c.workload.prompt.max_tokens);
     }},
    {"output_dist",
     [](const SimConfig& c) {
       return std::string(LengthDistName(c.workload.output.dist));
     },
     kEmpty},
    {"output_median",
     [](const SimConfig& c) { return absl::StrCat(c.workload.output.median); }},
    {"output_sigma",
     [](const SimConfig& c) { return absl::StrCat(c.workload.output.sigma); }},
    {"output_max",
     [](const SimConfig& c) {
       return absl::StrCat(c.workload.output.max_tokens);
     }},
    {"beam_pct",
     [](const SimConfig& c) { return absl::StrCat(c.workload.beam_pct); }},
    {"fork_pct",
     [](const SimConfig& c) { return absl::StrCat(c.workload.fork_pct); }},
    {"crop_pct",
     [](const SimConfig& c) { return absl::StrCat(c.workload.crop_pct); }},
    {"beam_width",
     [](const SimConfig& c) { return absl::StrCat(c.workload.beam_width); }},
    {"fork_samples",
     [](const SimConfig& c) { return absl::StrCat(c.workload.fork_samples); }},
    {"crop_window",
     [](const SimConfig& c) { return absl::StrCat(c.workload.crop_window); }},
    {"policy",
     [](const SimConfig& c) { return std::string(PolicyName(c.policy)); },
     kEmpty},
    {"check_every",
     [](const SimConfig& c) { return absl::StrCat(c.check_every); }},
    {"max_running",
     [](const SimConfig& c) { return absl::StrCat(c.max_running); }},
    {"max_waiting",
     [](const SimConfig& c) { return absl::StrCat(c.max_waiting); }},
    {"watermark_pct",
     [](const SimConfig& c) { return absl::StrCat(c.watermark_pct); }},
    {"model",
     [](const SimConfig& c) {
       return c.model.empty() ? std::string("none") : c.model;
     },
     kEmpty},
    {"storage",
     [](const SimConfig& c) { return std::string(StorageModeName(c.storage)); },
     kEmpty},
    {"admission",
     [](const SimConfig& c) {
       return std::string(AdmissionModeName(c.admission));
     },
     kEmpty},
    {"preemption",
     [](const SimConfig& c) {
       return std::string(PreemptionModeName(c.preemption));
     },
     kEmpty},
    {"trace",
     [](const SimConfig& c) {
       return c.trace_path.empty() ? std::string("none") : c.trace_path;
     },
     kEmpty},
    {"trace_step_ms",
     [](const SimConfig& c) { return absl::StrCat(c.trace_step_ms); }},
    {"prefix_caching",
     [](const SimConfig& c) {
       return std::string(c.prefix_caching ? "true" : "false");
     },
     kEmpty},
    {"kv_dtype",
     [](const SimConfig& c) {
       return c.layout.quantized()
                  ? std::string(KVStorageName(c.layout.storage))
                  : std::string(DTypeName(c.layout.dtype));
     },
     kEmpty},
    {"compare_prefix_caching",
     [](const SimConfig& c) {
       return std::string(c.compare_without_prefix_caching ? "true" : "false");
     },
     kEmpty},
};

}  // namespace

std::string PresetFlagHelp(std::string_view help, std::string_view flag_name) {
  const PresetField* field = nullptr;
  for (const PresetField& f : kFields) {
    if (f.flag_name == flag_name) field = &f;
  }
  PKV_CHECK(field != nullptr, "no preset field for flag --%s",
            std::string(flag_name));
  // (value, presets that use it), in order of first appearance. Strings
  // throughout: Debian's absl::string_view is not std::string_view.
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;
  for (std::string_view preset : kPresetNames) {
    absl::StatusOr<SimConfig> config = PresetConfig(preset);
    PKV_CHECK(config.ok(), "preset %s: %s", std::string(preset),
              config.status().ToString());
    std::string value = field->value(*config);
    auto it = groups.begin();
    while (it != groups.end() && it->first != value) ++it;
    if (it == groups.end()) {
      groups.push_back({std::move(value), {std::string(preset)}});
    } else {
      it->second.emplace_back(preset);
    }
  }
  const std::string head =
      absl::StrCat(std::string(help), " [", std::string(field->unset),
                   ": the preset's value");
  if (groups.size() == 1) {
    return absl::StrCat(head, ", ", groups[0].first, " in every preset]");
  }
  std::vector<std::string> parts;
  for (const auto& [value, presets] : groups) {
    parts.push_back(absl::StrCat(absl::StrJoin(presets, ", "), ": ", value));
  }
  return absl::StrCat(head, "; ", absl::StrJoin(parts, "; "), "]");
}

std::vector<std::string_view> PresetFlagNames() {
  std::vector<std::string_view> names;
  for (const PresetField& f : kFields) names.push_back(f.flag_name);
  return names;
}

}  // namespace pagedkv::kv_stress
