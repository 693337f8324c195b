// tools/kv_stress/flag_help.h
//
// Help text for kv_stress's preset-backed flags. Most flags default to -1
// (strings to "") meaning "take the value of --preset", which `--help` alone
// would show as a bare "default: -1". PresetFlagHelp appends what each preset
// actually uses, read from PresetConfig so the text cannot drift from the
// presets; presets that agree are grouped:
//
//   PresetFlagHelp("Layers", "layers")
//   // "Layers [-1: the preset's value; chat, beam, long: 8; tiny: 2]"
//   PresetFlagHelp("Preemption policy", "policy")
//   // "Preemption policy ["": the preset's value, newest_first in every
//   //  preset]"
//
// An absl flag's help may be such an expression; it is evaluated only when
// the help is printed.
//
// Thread safety: pure functions.
#ifndef PAGEDKV_TOOLS_KV_STRESS_FLAG_HELP_H_
#define PAGEDKV_TOOLS_KV_STRESS_FLAG_HELP_H_

#include <string>
#include <string_view>
#include <vector>

namespace pagedkv::kv_stress {

// Returns `help` followed by each preset's value of the field that flag
// `flag_name` overrides (see the file comment).
// REQUIRES: flag_name is one of PresetFlagNames().
std::string PresetFlagHelp(std::string_view help, std::string_view flag_name);

// Returns the names of the flags whose default is the preset's value, in
// kv_stress's order.
std::vector<std::string_view> PresetFlagNames();

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_FLAG_HELP_H_
