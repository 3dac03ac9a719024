// `cxr registry`: the file-based model registry (registry/registry.h) from the shell.
// Subcommands: init, keygen, register, list, show, promote, rollback, archive, delete,
// verify, ab set|route|clear|show, log (the audit log), perf (a version's performance log).
// The registry is --registry DIR, else $CXR_REGISTRY, else ./registry; the key of an
// encrypted registry is --key-file FILE, else $CXR_REGISTRY_KEY / $CXR_REGISTRY_KEY_FILE.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "registry/registry.h"
#include "runtime/error.h"
#include "tools/cxr/commands.h"

namespace cxr::cli {

namespace {

namespace fs = std::filesystem;
namespace reg = cxr::registry;
using nlohmann::json;

struct RegistryArgs {
  std::string registry, key_file;
  bool json = false;
  std::string name, version, ref, model_file, stage, reason, request_id;
  // register
  std::string bump = "patch", metadata, metrics, training_config, run_dir, dataset_name, dataset_version, data_manifest,
              git_rev, description;
  // init / keygen / ab / log
  bool encrypt = false;
  uint64_t perf_max_bytes = 1u << 20;
  int perf_keep = 5;
  std::string out, control, treatment;
  double split = -1;
  int tail = 0;
};

// Runs `f`, turning the library's verdict on a malformed argument into a usage error.
template <typename F>
void usage_check(F&& f) {
  try {
    f();
  } catch (const ValueError& e) {
    throw UsageError(e.what());
  }
}

std::string registry_dir(const RegistryArgs& a) {
  if (!a.registry.empty()) return a.registry;
  if (const char* e = std::getenv("CXR_REGISTRY"); e != nullptr && *e != '\0') return e;
  return "registry";
}

reg::OpenOptions open_options(const RegistryArgs& a) {
  reg::OpenOptions o;
  if (!a.key_file.empty()) o.key = reg::Key::from_file(a.key_file);
  return o;
}

json read_json_file(const std::string& path, const char* what) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw FileError(std::string(what) + " '" + path + "': no such file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw FileError(std::string(what) + " '" + path + "': " + std::strerror(errno));
  std::string text;
  char buf[65536];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, n);
  std::fclose(f);
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw FileError(std::string(what) + " '" + path + "': expected a JSON object");
  return j;
}

std::string short_hash(const std::string& h) { return h.substr(0, 12); }

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i)
      line += i + 1 < r.size() ? r[i] + std::string(w[i] - r[i].size() + 2, ' ') : r[i];
    std::printf("%s\n", line.c_str());
  }
}

int cmd_init(const RegistryArgs& a) {
  reg::InitOptions io;
  io.encrypt = a.encrypt;
  io.perf_max_bytes = a.perf_max_bytes;
  io.perf_keep = a.perf_keep;
  if (a.perf_keep < 0 || a.perf_max_bytes < 1024)
    throw UsageError("--perf-keep must be >= 0 and --perf-max-bytes >= 1024");
  const std::string dir = registry_dir(a);
  reg::Registry::init(dir, io, open_options(a));
  std::printf("initialised model registry %s%s\n", dir.c_str(),
              a.encrypt ? " (artifacts encrypted with AES-256-GCM)" : "");
  return 0;
}

int cmd_keygen(const RegistryArgs& a) {
  const reg::Key k = reg::Key::generate();
  const int fd = ::open(a.out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    throw FileError("cannot create key file '" + a.out + "': " + std::strerror(errno) +
                    " (an existing key is never overwritten)");
  const std::string text = k.hex() + "\n";
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) throw FileError("cannot write key file '" + a.out + "'");
  std::printf("wrote a new 256-bit key to %s (key id %s); keep it apart from the registry\n", a.out.c_str(),
              k.id().c_str());
  return 0;
}

int cmd_register(const RegistryArgs& a) {
  usage_check([&] {
    reg::check_name(a.name);
    if (!a.version.empty()) reg::SemVer::parse(a.version);
    reg::parse_bump(a.bump);
  });
  reg::RegisterOptions ro;
  ro.version = a.version;
  ro.bump = reg::parse_bump(a.bump);
  ro.reason = a.reason;
  if (!a.metadata.empty()) ro.metadata = read_json_file(a.metadata, "--metadata");
  if (!a.run_dir.empty()) {
    std::error_code ec;
    if (!fs::is_directory(a.run_dir, ec)) throw FileError("--run '" + a.run_dir + "': not a directory");
    if (fs::exists(fs::path(a.run_dir) / "metrics.json"))
      ro.metadata["metrics"] = read_json_file((fs::path(a.run_dir) / "metrics.json").string(), "--run metrics");
    if (fs::exists(fs::path(a.run_dir) / "config.json"))
      ro.metadata["training_config"] = read_json_file((fs::path(a.run_dir) / "config.json").string(), "--run config");
  }
  if (!a.metrics.empty()) ro.metadata["metrics"] = read_json_file(a.metrics, "--metrics");
  if (!a.training_config.empty())
    ro.metadata["training_config"] = read_json_file(a.training_config, "--training-config");
  if (!a.dataset_name.empty()) ro.metadata["dataset"]["name"] = a.dataset_name;
  if (!a.dataset_version.empty()) ro.metadata["dataset"]["version"] = a.dataset_version;
  if (!a.data_manifest.empty()) {
    std::error_code ec;
    if (!fs::is_regular_file(a.data_manifest, ec))
      throw FileError("--data-manifest '" + a.data_manifest + "': no such file");
    ro.metadata["dataset"]["manifest_sha256"] = reg::sha256_file(a.data_manifest);
  }
  if (!a.git_rev.empty()) ro.metadata["git_revision"] = a.git_rev;
  if (!a.description.empty()) ro.metadata["description"] = a.description;
  reg::Registry r = reg::Registry::open(registry_dir(a), open_options(a));
  const reg::VersionRecord v = r.register_model(a.name, a.model_file, ro);
  if (a.json)
    std::printf("%s\n", v.to_json().dump(2).c_str());
  else
    std::printf("registered %s@%s (sha256 %s, %llu bytes%s)\n", v.name.c_str(), v.version.c_str(), v.sha256.c_str(),
                static_cast<unsigned long long>(v.size), v.encrypted ? ", encrypted" : "");
  return 0;
}

int cmd_list(const RegistryArgs& a) {
  if (!a.name.empty()) usage_check([&] { reg::check_name(a.name); });
  reg::Registry r = reg::Registry::open(registry_dir(a), open_options(a));
  const auto models = r.list(a.name);
  if (a.json) {
    json j = json::array();
    for (const auto& m : models) j.push_back(m.to_json());
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {{"NAME", "VERSION", "STAGE", "CREATED", "USER", "SHA256"}};
  for (const auto& m : models)
    for (const auto& v : m.versions)
      rows.push_back({m.name, v.version, reg::stage_name(v.stage), v.created, v.user, short_hash(v.sha256)});
  if (rows.size() == 1) {
    std::printf("no models registered in %s\n", registry_dir(a).c_str());
    return 0;
  }
  print_table(rows);
  for (const auto& m : models)
    if (m.ab)
      std::printf("%s: A/B test, control %s, treatment %s, split %g\n", m.name.c_str(), m.ab->control.c_str(),
                  m.ab->treatment.c_str(), m.ab->split);
  return 0;
}

int cmd_show(const RegistryArgs& a) {
  usage_check([&] { reg::Ref::parse(a.ref); });
  reg::Registry r = reg::Registry::open(registry_dir(a), open_options(a));
  const reg::VersionRecord v = r.resolve(a.ref);
  if (a.json) {
    std::printf("%s\n", v.to_json().dump(2).c_str());
    return 0;
  }
  std::printf("model:     %s@%s\nstage:     %s\ncreated:   %s by %s\nsha256:    %s\nsize:      %llu bytes\n",
              v.name.c_str(), v.version.c_str(), reg::stage_name(v.stage), v.created.c_str(), v.user.c_str(),
              v.sha256.c_str(), static_cast<unsigned long long>(v.size));
  if (v.encrypted) std::printf("encrypted: AES-256-GCM, key id %s\n", v.key_id.c_str());
  std::printf("artifact:  %s\nmetadata:  %s\n", v.artifact_path.c_str(), v.metadata.dump(2).c_str());
  return 0;
}

int cmd_stage_change(const RegistryArgs& a, const std::string& what) {
  usage_check([&] {
    reg::check_name(a.name);
    if (what != "rollback") reg::SemVer::parse(a.version);
    if (what == "promote" && a.stage != "staging" && a.stage != "production")
      throw ValueError("--to must be staging or production, got '" + a.stage + "'");
  });
  reg::Registry r = reg::Registry::open(registry_dir(a), open_options(a));
  if (what == "promote") {
    const auto v = r.promote(a.name, a.version, reg::parse_stage(a.stage), a.reason);
    std::printf("%s@%s is now %s\n", v.name.c_str(), v.version.c_str(), reg::stage_name(v.stage));
  } else if (what == "rollback") {
    const auto v = r.rollback(a.name, a.reason);
    std::printf("rolled back: %s@%s is production again\n", v.name.c_str(), v.version.c_str());
  } else if (what == "archive") {
    r.archive(a.name, a.version, a.reason);
    std::printf("archived %s@%s\n", a.name.c_str(), a.version.c_str());
  } else {
    r.remove(a.name, a.version, a.reason);
    std::printf("deleted %s@%s\n", a.name.c_str(), a.version.c_str());
  }
  return 0;
}

int cmd_verify(const RegistryArgs& a) {
  reg::Registry r = reg::Registry::open(registry_dir(a), open_options(a));
  const reg::VerifyReport rep = r.verify();
  if (a.json) {
    std::printf("%s\n", rep.to_json().dump(2).c_str());
    return rep.ok ? 0 : 1;
  }
  for (const auto& w : rep.warnings) std::printf("warning: %s\n", w.c_str());
  for (const auto& e : rep.errors) std::printf("error: %s\n", e.c_str());
  std::printf("%s: %lld artifacts checked, %lld audit records, audit head %s\n", rep.ok ? "ok" : "FAILED",
              static_cast<long long>(rep.artifacts_checked), static_cast<long long>(rep.audit_records),
              rep.audit_head.c_str());
  return rep.ok ? 0 : 1;
}

int cmd_ab(const RegistryArgs& a, const std::string& what) {
  usage_check([&] {
    reg::check_name(a.name);
    if (what == "set") {
      reg::SemVer::parse(a.control);
      reg::SemVer::parse(a.treatment);
      if (!(a.split >= 0 && a.split <= 1)) throw ValueError("--split must be in [0, 1]");
    }
  });
  reg::Registry r = reg::Registry::open(registry_dir(a), open_options(a));
  if (what == "set") {
    r.ab_set(a.name, {a.control, a.treatment, a.split}, a.reason);
    std::printf("A/B test of %s: control %s, treatment %s, split %g\n", a.name.c_str(), a.control.c_str(),
                a.treatment.c_str(), a.split);
  } else if (what == "route") {
    std::printf("%s\n", r.ab_route(a.name, a.request_id).c_str());
  } else if (what == "clear") {
    r.ab_clear(a.name, a.reason);
    std::printf("cleared the A/B test of %s\n", a.name.c_str());
  } else {
    const auto ab = r.ab_get(a.name);
    if (a.json) {
      std::printf(
          "%s\n",
          ab ? json{{"control", ab->control}, {"treatment", ab->treatment}, {"split", ab->split}}.dump(2).c_str()
             : "null");
    } else if (ab) {
      std::printf("control %s, treatment %s, split %g\n", ab->control.c_str(), ab->treatment.c_str(), ab->split);
    } else {
      std::printf("%s has no A/B test\n", a.name.c_str());
    }
  }
  return 0;
}

int cmd_log(const RegistryArgs& a) {
  if (a.tail < 0) throw UsageError("--tail must be >= 0");
  reg::Registry r = reg::Registry::open(registry_dir(a), open_options(a));
  auto records = r.audit_log();
  const size_t from = a.tail > 0 && records.size() > static_cast<size_t>(a.tail) ? records.size() - a.tail : 0;
  for (size_t i = from; i < records.size(); ++i) {
    const json& j = records[i];
    if (a.json) {
      std::printf("%s\n", j.dump().c_str());
      continue;
    }
    json details = j;
    for (const char* k : {"seq", "time", "user", "pid", "prev", "hash", "action", "model", "version"}) details.erase(k);
    std::string what = j.value("model", "");
    if (j.contains("version")) what += "@" + j.value("version", "");
    std::printf("%5lld  %s  %-10s %-17s %-24s %s\n", static_cast<long long>(j.value("seq", int64_t{0})),
                j.value("time", "").c_str(), j.value("user", "").c_str(), j.value("action", "?").c_str(), what.c_str(),
                details.empty() ? "" : details.dump().c_str());
  }
  return 0;
}

int cmd_perf(const RegistryArgs& a) {
  usage_check([&] { reg::Ref::parse(a.ref); });
  reg::Registry r = reg::Registry::open(registry_dir(a), open_options(a));
  const auto v = r.resolve(a.ref);
  const auto entries = r.perf_log(v.name, v.version);
  if (a.json) {
    std::printf("%s\n", json(entries).dump(2).c_str());
    return 0;
  }
  if (entries.empty()) std::printf("no performance entries for %s@%s\n", v.name.c_str(), v.version.c_str());
  for (const auto& e : entries) std::printf("%s\n", e.dump().c_str());
  return 0;
}

}  // namespace

Command registry_command() {
  return {"registry", "the model registry: versions, stages, A/B tests, audit log", [](CLI::App& app) {
            auto a = std::make_shared<RegistryArgs>();
            app.fallthrough();
            app.require_subcommand(1);
            app.add_option("--registry", a->registry, "registry directory (default: $CXR_REGISTRY, else ./registry)");
            app.add_option("--key-file", a->key_file, "key of an encrypted registry: 32 raw bytes or 64 hex digits");
            auto reason = [a](CLI::App* s) { s->add_option("--reason", a->reason, "why (recorded in the audit log)"); };
            auto json_flag = [a](CLI::App* s) { s->add_flag("--json", a->json, "print JSON"); };

            auto* init = app.add_subcommand("init", "create a registry");
            init->add_flag("--encrypt", a->encrypt, "encrypt artifacts at rest (AES-256-GCM); needs a key");
            init->add_option("--perf-max-bytes", a->perf_max_bytes, "rotate a performance log past this size")
                ->capture_default_str();
            init->add_option("--perf-keep", a->perf_keep, "rotated performance logs kept per version")
                ->capture_default_str();
            auto* keygen = app.add_subcommand("keygen", "write a new random 256-bit key file (mode 0600)");
            keygen->add_option("--out", a->out, "key file to create")->required();

            auto* regi = app.add_subcommand("register", "add a model file as a new version");
            regi->add_option("name", a->name, "model name")->required();
            regi->add_option("model", a->model_file, "model file (.safetensors)")->required();
            regi->add_option("--version", a->version, "semantic version (default: bump the highest)");
            regi->add_option("--bump", a->bump, "patch, minor or major")->capture_default_str();
            regi->add_option("--metadata", a->metadata, "JSON object recorded with the version");
            regi->add_option("--run", a->run_dir, "a `cxr train` run folder: its metrics.json and config.json");
            regi->add_option("--metrics", a->metrics, "JSON file of evaluation metrics");
            regi->add_option("--training-config", a->training_config, "JSON file of the training settings");
            regi->add_option("--dataset-name", a->dataset_name, "training data set name");
            regi->add_option("--dataset-version", a->dataset_version, "training data set version");
            regi->add_option("--data-manifest", a->data_manifest, "data manifest file (its SHA-256 is recorded)");
            regi->add_option("--git-rev", a->git_rev, "source revision the model was trained from");
            regi->add_option("--description", a->description, "free text");
            reason(regi);
            json_flag(regi);

            auto* list = app.add_subcommand("list", "list models and versions");
            list->add_option("name", a->name, "only this model");
            json_flag(list);
            auto* show = app.add_subcommand("show", "show a version and its metadata");
            show->add_option("ref", a->ref, "NAME, NAME@VERSION, NAME@production, NAME@staging")->required();
            json_flag(show);

            auto* promote = app.add_subcommand("promote", "move a version to staging or production");
            promote->add_option("name", a->name, "model name")->required();
            promote->add_option("version", a->version, "version")->required();
            promote->add_option("--to", a->stage, "staging or production")->required();
            reason(promote);
            auto* rollback = app.add_subcommand("rollback", "make the previous production version production again");
            rollback->add_option("name", a->name, "model name")->required();
            reason(rollback);
            auto* archive = app.add_subcommand("archive", "retire a version (kept, not resolvable as latest)");
            archive->add_option("name", a->name, "model name")->required();
            archive->add_option("version", a->version, "version")->required();
            reason(archive);
            auto* del = app.add_subcommand("delete", "delete a version (not the production one)");
            del->add_option("name", a->name, "model name")->required();
            del->add_option("version", a->version, "version")->required();
            reason(del);
            auto* verify = app.add_subcommand("verify", "check artifacts' hashes, stages and the audit chain");
            json_flag(verify);

            auto* ab = app.add_subcommand("ab", "A/B tests between two versions");
            ab->require_subcommand(1);
            auto* ab_set = ab->add_subcommand("set", "route a fraction of requests to a treatment version");
            ab_set->add_option("name", a->name, "model name")->required();
            ab_set->add_option("--control", a->control, "control version")->required();
            ab_set->add_option("--treatment", a->treatment, "treatment version")->required();
            ab_set->add_option("--split", a->split, "fraction routed to the treatment, in [0, 1]")->required();
            reason(ab_set);
            auto* ab_route = ab->add_subcommand("route", "print the version a request id is routed to");
            ab_route->add_option("name", a->name, "model name")->required();
            ab_route->add_option("request_id", a->request_id, "request id")->required();
            auto* ab_clear = ab->add_subcommand("clear", "end the A/B test");
            ab_clear->add_option("name", a->name, "model name")->required();
            reason(ab_clear);
            auto* ab_show = ab->add_subcommand("show", "show the A/B test");
            ab_show->add_option("name", a->name, "model name")->required();
            json_flag(ab_show);

            auto* log = app.add_subcommand("log", "print the audit log");
            log->add_option("--tail", a->tail, "only the last N records");
            json_flag(log);
            auto* perf = app.add_subcommand("perf", "print a version's performance log");
            perf->add_option("ref", a->ref, "NAME@VERSION, NAME@production, ...")->required();
            json_flag(perf);

            return [=]() -> int {
              const RegistryArgs& x = *a;
              if (init->parsed()) return cmd_init(x);
              if (keygen->parsed()) return cmd_keygen(x);
              if (regi->parsed()) return cmd_register(x);
              if (list->parsed()) return cmd_list(x);
              if (show->parsed()) return cmd_show(x);
              if (promote->parsed()) return cmd_stage_change(x, "promote");
              if (rollback->parsed()) return cmd_stage_change(x, "rollback");
              if (archive->parsed()) return cmd_stage_change(x, "archive");
              if (del->parsed()) return cmd_stage_change(x, "delete");
              if (verify->parsed()) return cmd_verify(x);
              if (ab_set->parsed()) return cmd_ab(x, "set");
              if (ab_route->parsed()) return cmd_ab(x, "route");
              if (ab_clear->parsed()) return cmd_ab(x, "clear");
              if (ab_show->parsed()) return cmd_ab(x, "show");
              if (log->parsed()) return cmd_log(x);
              if (perf->parsed()) return cmd_perf(x);
              throw UsageError("give a subcommand");
            };
          }};
}

}  // namespace cxr::cli
