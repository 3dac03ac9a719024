// The registry's index: reading and validating index.json, the commit protocol (index
// replaced atomically holding the new audit record, then the record appended), the checks
// before a change, lookups of models and versions, and reference resolution.
#include <algorithm>
#include <filesystem>

#include "registry/internal.h"
#include "runtime/error.h"
#include "runtime/file_util.h"

namespace cxr::registry::detail {

namespace fs = std::filesystem;

json read_index(const std::string& dir) {
  const std::string path = index_path(dir);
  std::string text;
  try {
    text = read_file(path);
  } catch (const FileError& e) {
    throw FileError("'" + dir + "' is not a model registry (cannot read its index.json: " + e.what() + ")");
  }
  json idx = json::parse(text, nullptr, false);
  const bool ok = !idx.is_discarded() && idx.is_object() && idx.value("format", "") == kFormat &&
                  idx.contains("models") && idx["models"].is_object() && idx.contains("audit") &&
                  idx["audit"].is_object() && idx["audit"].contains("records") &&
                  idx["audit"]["records"].is_number_integer() && idx["audit"].value("hash", "").size() == 64 &&
                  idx["audit"].contains("last") && idx["audit"]["last"].is_string() && idx.contains("settings") &&
                  idx["settings"].is_object();
  if (!ok) throw FileError("'" + path + "' is not a valid registry index (expected " + std::string(kFormat) + " JSON)");
  return idx;
}

void commit(const std::string& dir, json& idx, json event, const std::string& user) {
  const AuditHead old = audit_head(idx);
  AuditHead h;
  h.records = old.records + 1;
  h.last = make_record(std::move(event), h.records, old.records == 0 ? kZeroHash : old.hash, user);
  if (h.last.size() > kMaxRecordBytes)
    throw ValueError("audit record of " + std::to_string(h.last.size()) + " bytes exceeds the limit of " +
                     std::to_string(kMaxRecordBytes));
  h.hash = h.last.substr(h.last.size() - 66, 64);
  set_audit_head(idx, h);
  write_file_atomic(index_path(dir), idx.dump(1) + "\n");  // the commit point
  try {
    append_durable(audit_path(dir), h.last + "\n");
  } catch (const FileError&) {
    // The change is committed and the index holds the record: the next open or change
    // appends it (see roll_forward), so the caller is not told the change failed.
  }
}

void prepare_change(const std::string& dir, json& idx) {
  const AuditHead head = audit_head(idx);
  std::string why;
  const TailState st = check_tail(dir, head, &why);
  if (st == TailState::modified) throw FileError("registry '" + dir + "': " + why + "; refusing to change it");
  if (st == TailState::pending) roll_forward(dir, head);
  sweep(dir, {".index.json.tmp."});
}

json& find_model(json& idx, const std::string& name) {
  check_name(name);
  auto& models = idx["models"];
  const auto it = models.find(name);
  if (it == models.end()) throw ValueError("unknown model '" + name + "' in this registry");
  return *it;
}

const json& find_model(const json& idx, const std::string& name) {
  return find_model(const_cast<json&>(idx), name);  // find_model never inserts
}

json& find_version(json& model, const std::string& name, const std::string& version) {
  SemVer::parse(version);
  auto& vs = model["versions"];
  const auto it = vs.find(version);
  if (it != vs.end()) return *it;
  const auto& del = model["deleted"];
  if (std::find(del.begin(), del.end(), version) != del.end())
    throw ValueError("model version " + name + "@" + version + " was deleted");
  std::string known;
  for (const auto& v : sorted_versions(model)) known += (known.empty() ? "" : ", ") + v;
  throw ValueError("unknown version " + name + "@" + version + " (versions: " + (known.empty() ? "none" : known) + ")");
}

std::vector<std::string> sorted_versions(const json& model) {
  std::vector<std::pair<SemVer, std::string>> vs;
  for (const auto& [v, e] : model.at("versions").items()) vs.emplace_back(SemVer::parse(v), v);
  std::sort(vs.begin(), vs.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (auto& p : vs) out.push_back(p.second);
  return out;
}

VersionRecord version_record(const std::string& dir, const std::string& name, const std::string& version,
                             const json& e) {
  VersionRecord r;
  r.name = name;
  r.version = version;
  r.stage = parse_stage(e.value("stage", "none"));
  r.sha256 = e.value("sha256", "");
  r.stored_sha256 = e.value("stored_sha256", "");
  r.size = e.value("size", uint64_t{0});
  r.encrypted = e.value("encrypted", false);
  r.key_id = e.value("key_id", "");
  r.created = e.value("created", "");
  r.user = e.value("user", "");
  r.meta_sha256 = e.value("meta_sha256", "");
  r.artifact_path = version_dir(dir, name, version) + "/" + e.value("file", "model.safetensors");
  return r;
}

VersionRecord resolve_in(const std::string& dir, const json& idx, const std::string& ref) {
  const Ref r = Ref::parse(ref);
  const json& m = find_model(idx, r.name);
  std::string v;
  if (r.selector == "production" || r.selector == "staging") {
    const json& s = m.at(r.selector);
    if (s.is_null()) throw ValueError("model '" + r.name + "' has no " + r.selector + " version");
    v = s.get<std::string>();
  } else if (r.selector == "latest") {
    const auto vs = sorted_versions(m);
    for (auto it = vs.rbegin(); it != vs.rend(); ++it)
      if (m["versions"][*it].value("stage", "") != "archived") {
        v = *it;
        break;
      }
    if (v.empty()) throw ValueError("model '" + r.name + "' has no version that is not archived");
  } else {
    v = r.selector;
  }
  json& e = find_version(const_cast<json&>(m), r.name, v);
  return version_record(dir, r.name, v, e);
}

std::string user_of(const OpenOptions& opt) { return opt.user.empty() ? os_user() : opt.user; }

void sweep(const std::string& dir, const std::vector<std::string>& prefixes) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    for (const auto& p : prefixes)
      if (n.rfind(p, 0) == 0) {
        std::error_code ec2;
        fs::remove_all(it->path(), ec2);
        break;
      }
  }
}

}  // namespace cxr::registry::detail
