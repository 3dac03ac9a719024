// Training settings for `cxr train`: one flat set of named settings, resolved in layers:
// built-in defaults, then a config file (JSON or TOML), then CXR_<KEY> environment
// variables (CXR_EPOCHS=20, CXR_LR=3e-4, ...), then command-line flags (--epochs 20).
// The resolved config is a JSON object holding every setting; the run saves it as
// config.json and every checkpoint carries it.
//
// Each layer is checked as it is applied: an unknown key or a value of the wrong type is
// a ValueError naming the source (file, variable or flag), the key and the expected type;
// validate_config() then checks ranges and choices.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cxr::train {

enum class Kind { integer, number, string, boolean };

struct Setting {
  std::string key;      // "batch_size" (flag --batch-size, variable CXR_BATCH_SIZE)
  Kind kind;
  nlohmann::json def;   // default value
  std::string help;
  std::string group;    // for --help: "data", "model", "optimization", "augmentation", "run"
};

const std::vector<Setting>& settings();
const Setting* find_setting(const std::string& key);
std::string flag_name(const std::string& key);  // "--batch-size"
std::string env_name(const std::string& key);   // "CXR_BATCH_SIZE"

nlohmann::json default_config();
// Parses text as the setting's kind ("true"/"false"/"1"/"0"/"yes"/"no" for booleans).
nlohmann::json parse_setting(const Setting& s, const std::string& text, const std::string& source);
// A .json or .toml file of top-level keys (TOML tables are flattened: [optimizer] lr = 1
// is the key "lr"; any key must be a setting).
nlohmann::json read_config_file(const std::string& path);
// Values set by CXR_<KEY> variables in `env` (default: the process environment).
nlohmann::json config_from_env(const std::map<std::string, std::string>* env = nullptr);
// Checks each key and type of `over` and copies it into `base`.
void merge_config(nlohmann::json& base, const nlohmann::json& over, const std::string& source);
// Ranges and choices; ValueError naming the setting.
void validate_config(const nlohmann::json& c);

}  // namespace cxr::train
