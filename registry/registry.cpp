// The registry's changes: init, open, register, promote, rollback, archive, delete, A/B
// tests, and the read-only list and resolve. Each change runs under the exclusive lock and
// ends in one commit (store.cpp).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "registry/internal.h"
#include "runtime/error.h"

namespace cxr::registry {

using namespace detail;
namespace fs = std::filesystem;

namespace {

json new_model() {
  return {{"versions", json::object()}, {"production", nullptr},    {"staging", nullptr},
          {"history", json::array()},   {"deleted", json::array()}, {"ab", nullptr}};
}

json event(const std::string& action, const std::string& name, const std::string& version, const std::string& reason) {
  json e = {{"action", action}, {"model", name}};
  if (!version.empty()) e["version"] = version;
  if (!reason.empty()) e["reason"] = reason;
  return e;
}

void erase_value(json& arr, const std::string& v) {
  json out = json::array();
  for (const auto& x : arr)
    if (x != v) out.push_back(x);
  arr = out;
}

// The stored artifact's problem, or "" when it is there and its SHA-256 matches the record.
std::string artifact_problem(const VersionRecord& r) {
  std::error_code ec;
  if (!fs::is_regular_file(r.artifact_path, ec))
    return "artifact '" + r.artifact_path + "' of " + r.name + "@" + r.version + " is missing";
  const std::string actual = sha256_file(r.artifact_path);
  if (actual != r.stored_sha256)
    return "integrity check failed for '" + r.artifact_path + "' (" + r.name + "@" + r.version + "): its SHA-256 is " +
           actual + " but " + r.stored_sha256 + " was recorded at registration; refusing to use it";
  return "";
}

// Within a change: checks the artifact before it becomes production or staging; on a
// mismatch commits an integrity_failure record, then throws.
void check_before_promotion(const std::string& dir, json& idx, const VersionRecord& r, const std::string& during,
                            const std::string& user) {
  const std::string problem = artifact_problem(r);
  if (problem.empty()) return;
  json e = event("integrity_failure", r.name, r.version, "");
  e["during"] = during;
  e["file"] = r.artifact_path;
  commit(dir, idx, e, user);
  throw FileError(problem);
}

// Removes leftovers of interrupted writes in a model's folder: staging and trash folders,
// and folders of deleted versions (a crash between a delete's commit and its removal).
void sweep_model_dir(const std::string& mdir, const json& m) {
  sweep(mdir, kTempPrefixes);
  for (const auto& d : m["deleted"]) {
    const std::string v = d.is_string() ? d.get<std::string>() : "";
    try {
      SemVer::parse(v);  // never a path outside the folder
    } catch (const ValueError&) {
      continue;
    }
    std::error_code ec;
    fs::remove_all(mdir + "/" + v, ec);
  }
}

// The version a registration gets: the one asked for (never an existing or deleted one),
// else the highest version ever registered, bumped.
std::string new_version(const json& m, const std::string& name, const RegisterOptions& opt) {
  if (!opt.version.empty()) {
    const std::string& v = opt.version;
    if (m["versions"].contains(v)) throw ValueError("model version " + name + "@" + v + " already exists");
    for (const auto& d : m["deleted"])
      if (d == v) throw ValueError("model version " + name + "@" + v + " was deleted; version numbers are not reused");
    return v;
  }
  std::optional<SemVer> hi;
  auto consider = [&](const std::string& s) {
    const SemVer x = SemVer::parse(s);
    if (!hi || *hi < x) hi = x;
  };
  for (const auto& [k, e] : m["versions"].items()) consider(k);
  for (const auto& d : m["deleted"]) consider(d.get<std::string>());
  return bump(hi, opt.bump).str();
}

// Writes a version's files into a staging folder (fsync), then renames it into place as
// models/NAME/VERSION; returns that folder.
std::string write_version_folder(const std::string& dir, const std::string& name, const std::string& v, const json& m,
                                 const std::vector<std::pair<std::string, std::string>>& files) {
  std::error_code ec;
  const std::string mdir = models_dir(dir) + "/" + name;
  const bool new_dir = !fs::exists(mdir, ec);
  fs::create_directories(mdir, ec);
  if (ec) throw FileError("cannot create '" + mdir + "': " + ec.message());
  if (new_dir) fsync_dir(models_dir(dir));
  sweep_model_dir(mdir, m);
  const std::string staging = mdir + "/.staging-" + v + "-" + random_hex(4);
  const std::string final_dir = version_dir(dir, name, v);
  try {
    fs::create_directory(staging);
    for (const auto& [file, data] : files) write_new_file(staging + "/" + file, data);
    fsync_dir(staging);
    fs::remove_all(final_dir);  // an unreferenced folder left by an interrupted registration
    fs::rename(staging, final_dir);
    fsync_dir(mdir);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(staging, ec);
    throw FileError("cannot write model version folder '" + final_dir + "': " + e.what());
  } catch (...) {
    fs::remove_all(staging, ec);
    throw;
  }
  return final_dir;
}

bool only_init_leftovers(const std::string& dir) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    const bool ok = n == "lock" || n == "audit.log" || n.rfind(".index.json.tmp.", 0) == 0 ||
                    (n == "models" && fs::is_directory(it->path()) && fs::is_empty(it->path()));
    if (!ok) return false;
  }
  return !ec;
}

}  // namespace

Registry Registry::init(const std::string& dir, const InitOptions& init, const OpenOptions& opt) {
  if (dir.empty()) throw ValueError("registry directory: empty path");
  if (init.perf_keep < 0 || init.perf_max_bytes < 1024)
    throw ValueError("registry init: perf_keep must be >= 0 and perf_max_bytes >= 1024");
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec)) throw FileError("'" + dir + "' exists and is not a directory");
    if (fs::exists(index_path(dir), ec)) throw FileError("'" + dir + "' is already a model registry");
    if (!only_init_leftovers(dir))
      throw FileError("'" + dir + "' is not empty; a new registry needs an empty or new folder");
  } else {
    fs::create_directories(dir, ec);
    if (ec) throw FileError("cannot create registry directory '" + dir + "': " + ec.message());
    const fs::path parent = fs::absolute(dir).parent_path();
    fsync_dir(parent.string());
  }
  json enc = nullptr;
  if (init.encrypt) {
    const auto key = resolve_key(opt);
    if (!key)
      throw ValueError(
          "registry init --encrypt needs a key: --key-file FILE, CXR_REGISTRY_KEY (64 hex digits) or "
          "CXR_REGISTRY_KEY_FILE");
    enc = {{"algorithm", "AES-256-GCM"}, {"key_id", key->id()}};
  }
  Lock lock(dir, Lock::exclusive);
  if (fs::exists(index_path(dir), ec)) throw FileError("'" + dir + "' is already a model registry");
  fs::create_directories(models_dir(dir), ec);
  if (ec) throw FileError("cannot create '" + models_dir(dir) + "': " + ec.message());
  ::truncate(audit_path(dir).c_str(), 0);  // a leftover of an interrupted init holds nothing committed
  json idx = {
      {"format", kFormat},
      {"created", utc_now()},
      {"settings", {{"encryption", enc}, {"perf_max_bytes", init.perf_max_bytes}, {"perf_keep", init.perf_keep}}},
      {"models", json::object()}};
  set_audit_head(idx, AuditHead{0, kZeroHash, ""});
  json e = {{"action", "init"}, {"encrypted", init.encrypt}, {"engine_version", CXR_VERSION_STRING}};
  commit(dir, idx, e, user_of(opt));
  fsync_dir(dir);
  return Registry(dir, opt);
}

Registry Registry::open(const std::string& dir, const OpenOptions& opt) {
  std::error_code ec;
  if (dir.empty()) throw ValueError("registry directory: empty path");
  if (!fs::exists(dir, ec)) throw FileError("no model registry at '" + dir + "' (create one with `cxr registry init`)");
  if (!fs::is_directory(dir, ec)) throw FileError("'" + dir + "' is not a directory, so not a model registry");
  if (!fs::exists(index_path(dir), ec)) throw FileError("'" + dir + "' is not a model registry: it has no index.json");
  Lock lock(dir, Lock::shared);
  json idx = read_index(dir);
  if (check_tail(dir, audit_head(idx)) == TailState::pending) {
    try {
      lock.upgrade();
      idx = read_index(dir);
      const AuditHead head = audit_head(idx);
      if (check_tail(dir, head) == TailState::pending) roll_forward(dir, head);
    } catch (const FileError&) {
      // A read-only registry: verify reports the pending record; reads still work.
    }
  }
  return Registry(dir, opt);
}

bool Registry::encrypted() const {
  Lock lock(dir_, Lock::shared);
  return !read_index(dir_)["settings"]["encryption"].is_null();
}

VersionRecord Registry::register_model(const std::string& name, const std::string& model_file,
                                       const RegisterOptions& opt) {
  check_name(name);
  if (!opt.metadata.is_object()) throw ValueError("register " + name + ": metadata must be a JSON object");
  if (!opt.version.empty()) SemVer::parse(opt.version);
  std::error_code ec;
  if (!fs::is_regular_file(model_file, ec)) throw FileError("'" + model_file + "': no such model file");
  const std::string bytes = read_file(model_file);
  const nn::LoadedModel lm = load_model_bytes(bytes, model_file);  // refuses anything but a loadable model
  const std::string sha = sha256_hex(bytes);
  json meta = opt.metadata;
  meta["model"] = {{"classes", lm.info.class_names},
                   {"in_channels", lm.model->in_channels()},
                   {"input_size", {lm.model->input_height(), lm.model->input_width()}},
                   {"engine_version", lm.engine_version}};
  const std::string user = user_of(opt_);

  return with_change(dir_, [&](json& idx) {
    json& models = idx["models"];
    if (!models.contains(name)) models[name] = new_model();
    json& m = models[name];
    const std::string v = new_version(m, name, opt);
    std::string stored = bytes, key_id, file = "model.safetensors";
    const json& enc = idx["settings"]["encryption"];
    if (!enc.is_null()) {
      const auto key = resolve_key(opt_);
      if (!key)
        throw ValueError(
            "registry '" + dir_ +
            "' encrypts artifacts: give the key (--key-file FILE, CXR_REGISTRY_KEY or CXR_REGISTRY_KEY_FILE)");
      if (key->id() != enc.value("key_id", ""))
        throw ValueError("wrong key for registry '" + dir_ + "': the key given has id " + key->id() +
                         ", the registry's key has id " + enc.value("key_id", ""));
      stored = encrypt(*key, artifact_aad(name, v), bytes);
      key_id = key->id();
      file = "model.safetensors.enc";
    }
    json full = meta;
    full["name"] = name;
    full["version"] = v;
    full["created"] = utc_now();
    full["user"] = user;
    full["host"] = host_name();
    full["engine_version"] = CXR_VERSION_STRING;
    full["artifact"] = {{"file", file},
                        {"sha256", sha},
                        {"stored_sha256", sha256_hex(stored)},
                        {"size", bytes.size()},
                        {"encrypted", !key_id.empty()}};
    const std::string meta_text = full.dump(2, ' ', false, json::error_handler_t::replace) + "\n";

    const std::string final_dir = write_version_folder(dir_, name, v, m, {{file, stored}, {"meta.json", meta_text}});
    json entry = {{"stage", "none"},
                  {"sha256", sha},
                  {"stored_sha256", full["artifact"]["stored_sha256"]},
                  {"size", bytes.size()},
                  {"encrypted", !key_id.empty()},
                  {"created", full["created"]},
                  {"user", user},
                  {"meta_sha256", sha256_hex(meta_text)},
                  {"file", file}};
    if (!key_id.empty()) entry["key_id"] = key_id;
    m["versions"][v] = entry;
    json e = event("register", name, v, opt.reason);
    e["sha256"] = sha;
    e["size"] = bytes.size();
    e["encrypted"] = !key_id.empty();
    try {
      commit(dir_, idx, e, user);
    } catch (...) {
      fs::remove_all(final_dir, ec);
      throw;
    }
    return version_record(dir_, name, v, entry);
  });
}

std::vector<ModelSummary> Registry::list(const std::string& name) const {
  Lock lock(dir_, Lock::shared);
  const json idx = read_index(dir_);
  std::vector<ModelSummary> out;
  if (!name.empty()) find_model(idx, name);
  for (const auto& [n, m] : idx["models"].items()) {
    if (!name.empty() && n != name) continue;
    ModelSummary s;
    s.name = n;
    if (!m["production"].is_null()) s.production = m["production"].get<std::string>();
    if (!m["staging"].is_null()) s.staging = m["staging"].get<std::string>();
    s.history = m["history"].get<std::vector<std::string>>();
    s.deleted = m["deleted"].get<std::vector<std::string>>();
    if (!m["ab"].is_null())
      s.ab = AbConfig{m["ab"]["control"].get<std::string>(), m["ab"]["treatment"].get<std::string>(),
                      m["ab"]["split"].get<double>()};
    for (const auto& v : sorted_versions(m)) s.versions.push_back(version_record(dir_, n, v, m["versions"][v]));
    out.push_back(std::move(s));
  }
  return out;
}

VersionRecord Registry::resolve(const std::string& ref) const {
  Lock lock(dir_, Lock::shared);
  const json idx = read_index(dir_);
  VersionRecord r = resolve_in(dir_, idx, ref);
  const std::string meta_path = version_dir(dir_, r.name, r.version) + "/meta.json";
  const std::string text = read_file(meta_path);
  if (sha256_hex(text) != r.meta_sha256)
    throw FileError("integrity check failed for '" + meta_path + "' (" + r.name + "@" + r.version +
                    "): its SHA-256 differs from the one recorded at registration");
  r.metadata = json::parse(text, nullptr, false);
  return r;
}

VersionRecord Registry::promote(const std::string& name, const std::string& version, Stage to,
                                const std::string& reason) {
  if (to != Stage::staging && to != Stage::production)
    throw ValueError("promote: the target stage must be staging or production, got " + std::string(stage_name(to)));
  const std::string user = user_of(opt_);
  return with_change(dir_, [&](json& idx) {
    json& m = find_model(idx, name);
    json& e = find_version(m, name, version);
    const std::string stage = stage_name(to);
    if (e["stage"] == stage) throw ValueError(name + "@" + version + " is already the " + stage + " version");
    if (to == Stage::staging && e["stage"] == "production")
      throw ValueError(name + "@" + version + " is the production version; it cannot move back to staging");
    check_before_promotion(dir_, idx, version_record(dir_, name, version, e), "promote", user);
    json ev = event("promote", name, version, reason);
    ev["stage"] = stage;
    const json old = m[stage];
    if (!old.is_null()) {
      m["versions"][old.get<std::string>()]["stage"] = "none";
      if (to == Stage::production) {
        erase_value(m["history"], old.get<std::string>());
        m["history"].push_back(old);
      }
    }
    ev["previous"] = old;
    if (to == Stage::production) {
      if (m["staging"] == version) m["staging"] = nullptr;
      erase_value(m["history"], version);
    }
    e["stage"] = stage;
    m[stage] = version;
    commit(dir_, idx, ev, user);
    return version_record(dir_, name, version, e);
  });
}

VersionRecord Registry::rollback(const std::string& name, const std::string& reason) {
  const std::string user = user_of(opt_);
  return with_change(dir_, [&](json& idx) {
    json& m = find_model(idx, name);
    if (m["production"].is_null()) throw ValueError("model '" + name + "' has no production version to roll back");
    if (m["history"].empty())
      throw ValueError("model '" + name + "' has no previous production version to roll back to");
    const std::string cur = m["production"].get<std::string>();
    const std::string prev = m["history"].back().get<std::string>();
    json& e = find_version(m, name, prev);
    check_before_promotion(dir_, idx, version_record(dir_, name, prev, e), "rollback", user);
    m["history"].erase(m["history"].size() - 1);
    m["versions"][cur]["stage"] = "none";
    if (m["staging"] == prev) m["staging"] = nullptr;
    e["stage"] = "production";
    m["production"] = prev;
    json ev = event("rollback", name, prev, reason);
    ev["from"] = cur;
    commit(dir_, idx, ev, user);
    return version_record(dir_, name, prev, e);
  });
}

namespace {
// Archive and delete are refused for the production version and versions in an A/B test.
void check_removable(const json& m, const std::string& name, const std::string& version, const char* what) {
  if (m["production"] == version)
    throw ValueError("cannot " + std::string(what) + " " + name + "@" + version +
                     ": it is the production version (promote another version or roll back first)");
  if (!m["ab"].is_null() && (m["ab"]["control"] == version || m["ab"]["treatment"] == version))
    throw ValueError("cannot " + std::string(what) + " " + name + "@" + version +
                     ": it is in the A/B test (clear it first with `cxr registry ab clear " + name + "`)");
}
}  // namespace

void Registry::archive(const std::string& name, const std::string& version, const std::string& reason) {
  const std::string user = user_of(opt_);
  with_change(dir_, [&](json& idx) {
    json& m = find_model(idx, name);
    json& e = find_version(m, name, version);
    if (e["stage"] == "archived") throw ValueError(name + "@" + version + " is already archived");
    check_removable(m, name, version, "archive");
    if (m["staging"] == version) m["staging"] = nullptr;
    erase_value(m["history"], version);
    e["stage"] = "archived";
    commit(dir_, idx, event("archive", name, version, reason), user);
    return 0;
  });
}

void Registry::remove(const std::string& name, const std::string& version, const std::string& reason) {
  const std::string user = user_of(opt_);
  with_change(dir_, [&](json& idx) {
    json& m = find_model(idx, name);
    json& e = find_version(m, name, version);
    check_removable(m, name, version, "delete");
    json ev = event("delete", name, version, reason);
    ev["sha256"] = e["sha256"];
    if (m["staging"] == version) m["staging"] = nullptr;
    erase_value(m["history"], version);
    m["versions"].erase(version);
    m["deleted"].push_back(version);
    commit(dir_, idx, ev, user);
    // Committed: now remove the folder (a crash here leaves an unreferenced folder).
    const std::string d = version_dir(dir_, name, version);
    const std::string trash = models_dir(dir_) + "/" + name + "/.trash-" + version + "-" + random_hex(4);
    std::error_code ec;
    fs::rename(d, trash, ec);
    fs::remove_all(ec ? d : trash, ec);
    sweep_model_dir(models_dir(dir_) + "/" + name, m);
    return 0;
  });
}

AbConfig Registry::ab_set(const std::string& name, const AbConfig& ab, const std::string& reason) {
  if (!(std::isfinite(ab.split) && ab.split >= 0 && ab.split <= 1))
    throw ValueError("A/B split must be in [0, 1], got " + std::to_string(ab.split));
  if (ab.control == ab.treatment)
    throw ValueError("A/B test of " + name + ": control and treatment are the same version");
  const std::string user = user_of(opt_);
  return with_change(dir_, [&](json& idx) {
    json& m = find_model(idx, name);
    for (const std::string* v : {&ab.control, &ab.treatment}) {
      const json& e = find_version(m, name, *v);
      if (e["stage"] == "archived") throw ValueError("A/B test of " + name + ": " + *v + " is archived");
    }
    json ev = event("ab_set", name, "", reason);
    ev["control"] = ab.control;
    ev["treatment"] = ab.treatment;
    ev["split"] = ab.split;
    m["ab"] = {{"control", ab.control}, {"treatment", ab.treatment}, {"split", ab.split}};
    commit(dir_, idx, ev, user);
    return ab;
  });
}

std::optional<AbConfig> Registry::ab_get(const std::string& name) const {
  Lock lock(dir_, Lock::shared);
  const json idx = read_index(dir_);
  const json& m = find_model(idx, name);
  if (m["ab"].is_null()) return std::nullopt;
  return AbConfig{m["ab"]["control"].get<std::string>(), m["ab"]["treatment"].get<std::string>(),
                  m["ab"]["split"].get<double>()};
}

void Registry::ab_clear(const std::string& name, const std::string& reason) {
  const std::string user = user_of(opt_);
  with_change(dir_, [&](json& idx) {
    json& m = find_model(idx, name);
    if (m["ab"].is_null()) throw ValueError("model '" + name + "' has no A/B test to clear");
    m["ab"] = nullptr;
    commit(dir_, idx, event("ab_clear", name, "", reason), user);
    return 0;
  });
}

std::string Registry::ab_route(const std::string& name, const std::string& request_id) const {
  const auto ab = ab_get(name);
  if (!ab) throw ValueError("model '" + name + "' has no A/B test (set one with `cxr registry ab set`)");
  return ab_choose(*ab, name, request_id);
}

VersionRecord register_model_file(const std::string& dir, const std::string& name, const std::string& model_file,
                                  const RegisterOptions& opt) {
  std::error_code ec;
  if (!fs::exists(index_path(dir), ec) && (!fs::exists(dir, ec) || fs::is_empty(dir, ec))) {
    try {
      Registry::init(dir);
    } catch (const FileError&) {
      if (!fs::exists(index_path(dir), ec)) throw;  // else another process created it first
    }
  }
  return Registry::open(dir).register_model(name, model_file, opt);
}

}  // namespace cxr::registry
