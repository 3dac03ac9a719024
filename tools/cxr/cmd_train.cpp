// `cxr train`: trains a classifier on an image folder or CSV lists and writes a run
// directory (model, checkpoints, history, metrics, HTML report; tools/train/trainer.h).
// Settings resolve as defaults < --config FILE (JSON or TOML) < CXR_<KEY> environment
// variables < flags; every setting has a flag (tools/train/config.h lists them).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "registry/registry.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "tools/cxr/commands.h"
#include "tools/train/config.h"
#include "tools/train/trainer.h"

namespace cxr::cli {

namespace {

using nlohmann::json;

struct TrainArgs {
  std::string data_pos, config, resume, progress = "auto", register_name, registry;
  int64_t max_steps = 0;
  bool print_config = false;
  std::map<std::string, std::string> values;  // non-boolean settings as given
  std::map<std::string, bool> flags;          // boolean settings
  std::map<std::string, CLI::Option*> options;
};

json read_json(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return json();
  try {
    return json::parse(in);
  } catch (const json::parse_error&) {
    return json();
  }
}

// Registers a finished run's best model with the run's metrics, settings and data.
void register_run(const TrainArgs& a, const train::TrainResult& r) {
  namespace fs = std::filesystem;
  std::string dir = a.registry;
  if (dir.empty()) {
    const char* env = std::getenv("CXR_REGISTRY");
    dir = env != nullptr && *env != '\0' ? env : "registry";
  }
  const fs::path run(r.run_dir);
  const json metrics = read_json(run / "metrics.json"), config = read_json(run / "config.json");
  registry::RegisterOptions ro;
  json dataset = {{"name", config.value("data", std::string())}};
  if (metrics.is_object() && metrics.contains("data")) dataset["fingerprint"] = metrics["data"].value("train_fingerprint", "");
  const fs::path manifest = fs::path(config.value("data", std::string())) / "manifest.csv";
  std::error_code ec;
  if (!config.value("data", std::string()).empty() && fs::is_regular_file(manifest, ec))
    dataset["manifest_sha256"] = registry::sha256_file(manifest.string());
  json m = json::object();
  if (metrics.is_object())
    for (const char* k : {"monitor", "best_epoch", "best_value", "val", "test"})
      if (metrics.contains(k)) m[k] = metrics[k];
  ro.metadata = {{"metrics", m}, {"training_config", config}, {"dataset", dataset},
                 {"git_revision", CXR_GIT_REVISION}, {"description", "cxr train run " + r.run_dir}};
  ro.reason = "cxr train --register";
  const registry::VersionRecord v = registry::register_model_file(dir, a.register_name, r.model_path, ro);
  std::printf("registered %s@%s in %s\n", v.name.c_str(), v.version.c_str(), dir.c_str());
}

int run(TrainArgs& a) {
  if (!a.register_name.empty()) {
    try {
      registry::check_name(a.register_name);
    } catch (const ValueError& e) {
      throw UsageError(std::string("--register: ") + e.what());
    }
  }
  json flags = json::object();
  for (const auto& s : train::settings()) {
    CLI::Option* o = a.options.at(s.key);
    if (o->count() == 0) continue;
    flags[s.key] = s.kind == train::Kind::boolean ? json(a.flags[s.key])
                                                  : train::parse_setting(s, a.values[s.key], train::flag_name(s.key));
  }
  if (!a.data_pos.empty()) {
    if (flags.contains("data") && flags["data"] != a.data_pos) throw UsageError("give the data folder once (DATA or --data)");
    flags["data"] = a.data_pos;
  }
  train::TrainOptions to;
  if (a.progress == "auto") to.progress = train::ProgressMode::automatic;
  else if (a.progress == "bar") to.progress = train::ProgressMode::bar;
  else if (a.progress == "lines") to.progress = train::ProgressMode::lines;
  else if (a.progress == "none") to.progress = train::ProgressMode::none;
  else throw UsageError("--progress must be auto, bar, lines or none, got '" + a.progress + "'");
  if (a.max_steps < 0) throw UsageError("--max-steps must be >= 0");
  to.max_steps = a.max_steps;

  if (!a.resume.empty()) {
    if (!a.config.empty()) throw UsageError("--config cannot be combined with --resume (the checkpoint has the settings)");
    to.resume = a.resume;
    to.overrides = flags;  // the trainer says which may change
    if (a.print_config) throw UsageError("--print-config applies to new runs");
  } else {
    json c = train::default_config();
    try {
      if (!a.config.empty()) train::merge_config(c, train::read_config_file(a.config), a.config);
      train::merge_config(c, train::config_from_env(), "environment");
      train::merge_config(c, flags, "flags");
      if (a.print_config) {
        std::printf("%s\n", c.dump(2).c_str());
        return 0;
      }
      train::validate_config(c);
    } catch (const ValueError& e) {
      throw UsageError(e.what());
    }
    to.overrides = json::object();
    const train::TrainResult r = train::train(c, to);
    if (!r.interrupted && !a.register_name.empty()) register_run(a, r);
    return r.interrupted ? 130 : 0;
  }
  const train::TrainResult r = train::train(json::object(), to);
  if (!r.interrupted && !a.register_name.empty()) register_run(a, r);
  return r.interrupted ? 130 : 0;
}

}  // namespace

Command train_command() {
  return {"train", "train a classifier on an image folder or CSV lists", [](CLI::App& app) {
            auto a = std::make_shared<TrainArgs>();
            app.description(
                "Train a classifier. DATA is an ImageFolder root with train/ and val/ (and optionally test/)\n"
                "folders of class folders, or a folder of class folders split by --val-split. Writes the run\n"
                "directory (--out): model.safetensors (best), checkpoints/{best,last}.ckpt, history.csv,\n"
                "metrics.json, report.html, config.json. Settings: defaults < --config FILE (.json/.toml,\n"
                "keys as the flags with '_') < CXR_<KEY> environment variables (CXR_EPOCHS=20) < flags.");
            app.add_option("DATA", a->data_pos, "training data folder (same as --data)");
            for (const auto& s : train::settings()) {
              const std::string def = s.def.is_string() ? s.def.get<std::string>() : s.def.dump();
              const std::string help = s.help + (def.empty() ? "" : " [" + def + "]");
              CLI::Option* o;
              if (s.kind == train::Kind::boolean) {
                const std::string name = train::flag_name(s.key);
                o = app.add_flag(name + ",!--no-" + name.substr(2), a->flags[s.key], help);
              } else {
                o = app.add_option(train::flag_name(s.key), a->values[s.key], help);
              }
              o->group(s.group);
              if (s.kind == train::Kind::integer) o->type_name("INT");
              else if (s.kind == train::Kind::number) o->type_name("FLOAT");
              else if (s.kind == train::Kind::string) o->type_name(s.key == "data" || s.key == "out" || s.key.ends_with("csv") ? "PATH" : "TEXT");
              a->options[s.key] = o;
            }
            app.add_option("--config", a->config, "settings file (.json or .toml)")->group("run");
            app.add_option("--resume", a->resume, "continue a run from its run directory or a checkpoint file")->group("run");
            app.add_option("--progress", a->progress, "auto (a bar on a terminal, else lines), bar, lines or none")
                ->capture_default_str()
                ->group("run");
            app.add_option("--max-steps", a->max_steps, "stop after N steps in this process, with a checkpoint (0: no limit)")
                ->group("run");
            app.add_flag("--print-config", a->print_config, "print the resolved settings as JSON and exit")->group("run");
            app.add_option("--register", a->register_name,
                           "when training finishes, register the best model under NAME in the model registry")
                ->group("run");
            app.add_option("--registry", a->registry, "registry directory for --register (default $CXR_REGISTRY, else ./registry)")
                ->group("run");
            return [a] { return run(*a); };
          }};
}

}  // namespace cxr::cli
