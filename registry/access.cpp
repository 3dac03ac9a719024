// Using registered models: verified loading (hash check, decryption, model rebuild), audit
// records from apps, per-version performance logs with size-based rotation, and verify.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "registry/internal.h"
#include "runtime/error.h"

namespace cxr::registry {

using namespace detail;
namespace fs = std::filesystem;

namespace {

void record_integrity_failure(const std::string& dir, const OpenOptions& opt, const VersionRecord& r,
                              const std::string& during) {
  try {
    with_change(dir, [&](json& idx) {
      json e = {{"action", "integrity_failure"},
                {"model", r.name},
                {"version", r.version},
                {"during", during},
                {"file", r.artifact_path}};
      commit(dir, idx, e, user_of(opt));
      return 0;
    });
  } catch (const Error&) {
    // The refusal below is what matters; a log that cannot take the record is reported by verify.
  }
}

// The stored bytes of `r` checked against the recorded hashes and decrypted.
std::string verified_bytes(const std::string& dir, const OpenOptions& opt, const VersionRecord& r,
                           const std::string& stored, const std::string& during) {
  const std::string actual = sha256_hex(stored);
  if (actual != r.stored_sha256) {
    record_integrity_failure(dir, opt, r, during);
    throw FileError("integrity check failed for '" + r.artifact_path + "' (" + r.name + "@" + r.version +
                    "): its SHA-256 is " + actual + " but " + r.stored_sha256 +
                    " was recorded at registration; refusing to load it");
  }
  if (!r.encrypted) return stored;
  const auto key = resolve_key(opt);
  if (!key)
    throw ValueError(r.name + "@" + r.version +
                     " is encrypted at rest: give the registry key (--key-file FILE, "
                     "CXR_REGISTRY_KEY or CXR_REGISTRY_KEY_FILE)");
  if (key->id() != r.key_id)
    throw ValueError("wrong key for " + r.name + "@" + r.version + ": the key given has id " + key->id() +
                     ", the artifact was encrypted with the key of id " + r.key_id);
  std::string plain = decrypt(*key, artifact_aad(r.name, r.version), stored, r.artifact_path);
  if (sha256_hex(plain) != r.sha256) {
    record_integrity_failure(dir, opt, r, during);
    throw FileError("integrity check failed for '" + r.artifact_path + "' (" + r.name + "@" + r.version +
                    "): the decrypted model's SHA-256 differs from the one recorded at registration");
  }
  return plain;
}

std::string read_artifact(const VersionRecord& r) {
  std::error_code ec;
  if (!fs::is_regular_file(r.artifact_path, ec))
    throw FileError("artifact '" + r.artifact_path + "' of " + r.name + "@" + r.version + " is missing");
  return read_file(r.artifact_path);
}

std::string perf_path(const std::string& dir, const std::string& name, const std::string& version, int k) {
  const std::string p = version_dir(dir, name, version) + "/perf.log";
  return k == 0 ? p : p + "." + std::to_string(k);
}

}  // namespace

LoadedVersion Registry::load(const std::string& ref, const LoadOptions& opt) {
  VersionRecord r = resolve(ref);  // checks meta.json's hash
  std::string stored;
  {
    Lock lock(dir_, Lock::shared);  // not deleted while it is read
    stored = read_artifact(r);
  }
  const std::string plain = verified_bytes(dir_, opt_, r, stored, "load");
  LoadedVersion out{r, load_model_bytes(plain, r.artifact_path)};
  if (opt.audit)
    audit("load", {{"model", r.name}, {"version", r.version}, {"sha256", r.sha256}, {"purpose", opt.purpose}});
  return out;
}

std::string Registry::artifact_bytes(const VersionRecord& v) const {
  std::string stored;
  {
    Lock lock(dir_, Lock::shared);
    stored = read_artifact(v);
  }
  return verified_bytes(dir_, opt_, v, stored, "read");
}

void Registry::audit(const std::string& action, const nlohmann::json& details) {
  const bool ok_action =
      !action.empty() && action.size() <= 32 &&
      std::all_of(action.begin(), action.end(), [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; });
  if (!ok_action) throw ValueError("audit action '" + action + "': expected 1-32 characters of a-z and _");
  if (!details.is_object()) throw ValueError("audit " + action + ": details must be a JSON object");
  for (const char* k : {"seq", "time", "user", "pid", "prev", "hash", "action"})
    if (details.contains(k)) throw ValueError("audit " + action + ": '" + k + "' is set by the registry");
  if (details.contains("model") && details["model"].is_string()) check_name(details["model"].get<std::string>());
  json e = details;
  e["action"] = action;
  const std::string user = user_of(opt_);
  with_change(dir_, [&](json& idx) {
    commit(dir_, idx, e, user);
    return 0;
  });
}

std::vector<nlohmann::json> Registry::audit_log() const {
  Lock lock(dir_, Lock::shared);
  const std::string text = read_file(audit_path(dir_));
  std::vector<json> out;
  size_t pos = 0;
  int64_t line = 0;
  for (size_t nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    ++line;
    json j = json::parse(text.substr(pos, nl - pos), nullptr, false);
    out.push_back(j.is_discarded() ? json{{"malformed_line", line}} : j);
  }
  return out;
}

void Registry::record_perf(const std::string& name, const std::string& version, const nlohmann::json& entry) {
  if (!entry.is_object())
    throw ValueError("performance entry for " + name + "@" + version + ": expected a JSON object");
  Lock lock(dir_, Lock::exclusive);
  json idx = read_index(dir_);
  find_version(find_model(idx, name), name, version);
  const uint64_t max_bytes = idx["settings"].value("perf_max_bytes", uint64_t{1} << 20);
  const int keep = idx["settings"].value("perf_keep", 5);
  json e = {{"time", utc_now()}};
  e.update(entry);
  const std::string line = e.dump(-1, ' ', true, json::error_handler_t::replace) + "\n";
  const std::string cur = perf_path(dir_, name, version, 0);
  struct stat st {};
  if (::stat(cur.c_str(), &st) == 0 && st.st_size > 0 && static_cast<uint64_t>(st.st_size) + line.size() > max_bytes) {
    std::error_code ec;
    for (int k = keep - 1; k >= 1; --k)
      fs::rename(perf_path(dir_, name, version, k), perf_path(dir_, name, version, k + 1), ec);
    if (keep >= 1)
      fs::rename(cur, perf_path(dir_, name, version, 1), ec);
    else
      fs::remove(cur, ec);
    fs::remove(perf_path(dir_, name, version, keep + 1), ec);
  }
  append_durable(cur, line);
}

std::vector<nlohmann::json> Registry::perf_log(const std::string& name, const std::string& version) const {
  Lock lock(dir_, Lock::shared);
  json idx = read_index(dir_);
  find_version(find_model(idx, name), name, version);
  const int keep = idx["settings"].value("perf_keep", 5);
  std::vector<json> out;
  for (int k = keep; k >= 0; --k) {
    std::error_code ec;
    const std::string p = perf_path(dir_, name, version, k);
    if (!fs::exists(p, ec)) continue;
    const std::string text = read_file(p);
    size_t pos = 0;
    for (size_t nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1) {
      json j = json::parse(text.substr(pos, nl - pos), nullptr, false);
      if (j.is_object()) out.push_back(j);
    }
  }
  return out;
}

// ---------------------------------------------------------------- verify

namespace {

void verify_models(const std::string& dir, const json& idx, const std::optional<Key>& key, VerifyReport& rep) {
  auto err = [&](const std::string& m) {
    rep.errors.push_back(m);
    rep.ok = false;
  };
  bool key_warned = false;
  for (const auto& [name, m] : idx["models"].items()) {
    if (!valid_name(name)) {
      err("index.json: invalid model name '" + name + "'");
      continue;
    }
    int productions = 0, stagings = 0;
    std::set<std::string> known;
    for (const auto& [v, e] : m["versions"].items()) {
      known.insert(v);
      const VersionRecord r = version_record(dir, name, v, e);
      productions += r.stage == Stage::production;
      stagings += r.stage == Stage::staging;
      ++rep.artifacts_checked;
      std::error_code ec;
      if (!fs::is_regular_file(r.artifact_path, ec)) {
        err(r.artifact_path + ": missing (artifact of " + name + "@" + v + ")");
        continue;
      }
      const std::string actual = sha256_file(r.artifact_path);
      if (actual != r.stored_sha256)
        err(r.artifact_path + ": SHA-256 is " + actual + ", " + r.stored_sha256 + " was recorded at registration (" +
            name + "@" + v + " was modified)");
      const std::string meta = version_dir(dir, name, v) + "/meta.json";
      if (!fs::is_regular_file(meta, ec))
        err(meta + ": missing");
      else if (sha256_file(meta) != r.meta_sha256)
        err(meta + ": SHA-256 differs from the one recorded at registration");
      if (r.encrypted && actual == r.stored_sha256) {
        if (key && key->id() == r.key_id) {
          try {
            if (sha256_hex(decrypt(*key, artifact_aad(name, v), read_file(r.artifact_path), r.artifact_path)) !=
                r.sha256)
              err(r.artifact_path + ": the decrypted model's SHA-256 differs from the one recorded");
          } catch (const Error& ex) {
            err(ex.what());
          }
        } else if (!key_warned) {
          rep.warnings.push_back(
              "encrypted artifacts were checked as stored; give the key to check them decrypted too");
          key_warned = true;
        }
      }
    }
    for (const char* stage : {"production", "staging"}) {
      const json& s = m[stage];
      const int count = std::string(stage) == "production" ? productions : stagings;
      if (count != (s.is_null() ? 0 : 1) || (!s.is_null() && (!known.count(s.get<std::string>()) ||
                                                              m["versions"][s.get<std::string>()]["stage"] != stage)))
        err("index.json: model '" + name + "' has " + std::to_string(count) + " " + stage +
            " versions, inconsistent with its " + stage + " entry");
    }
    for (const auto& h : m["history"])
      if (!known.count(h.get<std::string>()))
        err("index.json: model '" + name + "' history names unknown version " + h.get<std::string>());
    if (!m["ab"].is_null())
      for (const char* k : {"control", "treatment"})
        if (!known.count(m["ab"].value(k, "")))
          err("index.json: the A/B test of '" + name + "' names an unknown " + k + " version");
    // Leftovers of interrupted writes.
    std::error_code ec;
    for (fs::directory_iterator it(models_dir(dir) + "/" + name, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string n = it->path().filename().string();
      if (!known.count(n))
        rep.warnings.push_back(it->path().string() + ": not a registered version (left by an interrupted write; " +
                               "removed or replaced by the next registration)");
    }
  }
}

}  // namespace

VerifyReport Registry::verify() const {
  try {
    Registry::open(dir_, opt_);  // completes a pending audit record when it can
  } catch (const FileError&) {
  }
  VerifyReport rep;
  Lock lock(dir_, Lock::shared);
  json idx;
  try {
    idx = read_index(dir_);
  } catch (const FileError& e) {
    rep.ok = false;
    rep.errors.push_back(e.what());
    return rep;
  }
  std::optional<Key> key;
  try {
    key = resolve_key(opt_);
  } catch (const Error& e) {
    rep.warnings.push_back(std::string("the registry key could not be read: ") + e.what());
  }
  try {
    verify_models(dir_, idx, key, rep);
  } catch (const std::exception& e) {
    rep.ok = false;
    rep.errors.push_back(index_path(dir_) + ": malformed (" + e.what() + ")");
  }
  verify_audit(dir_, audit_head(idx), rep);
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().filename().string().rfind(".index.json.tmp.", 0) == 0)
      rep.warnings.push_back(it->path().string() + ": temp file of an interrupted write (removed by the next change)");
  return rep;
}

}  // namespace cxr::registry
