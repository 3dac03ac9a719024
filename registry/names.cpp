// Registry vocabulary: model names, semantic versions (parse, precedence, bump), stages,
// references (name@selector), A/B routing by hash, and the JSON forms of the records.
#include <cmath>
#include <cstring>

#include "registry/internal.h"
#include "runtime/error.h"

namespace cxr::registry {

namespace {

// A value for error messages: printable ASCII shown as is, anything else escaped.
std::string shown(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 32 && c < 127) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return "'" + out + "'";
}

bool is_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

uint64_t parse_number(const std::string& part, const std::string& whole) {
  if (!is_digits(part))
    throw ValueError("invalid version " + shown(whole) + ": expected MAJOR.MINOR.PATCH[-PRERELEASE], e.g. 1.2.0");
  if (part.size() > 1 && part[0] == '0')
    throw ValueError("invalid version " + shown(whole) + ": numbers have no leading zeros");
  if (part.size() > 9) throw ValueError("invalid version " + shown(whole) + ": numbers must be below 10^9");
  return std::stoull(part);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t b = 0;
  for (;;) {
    const size_t e = s.find(sep, b);
    out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + 1;
  }
  return out;
}

}  // namespace

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 64 || name.find("..") != std::string::npos) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return false;
  }
  return true;
}

void check_name(const std::string& name) {
  if (valid_name(name)) return;
  std::string why = "expected 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit";
  if (name.find('\0') != std::string::npos)
    why = "it contains a NUL byte";
  else if (name.find('/') != std::string::npos || name.find('\\') != std::string::npos)
    why = "it contains a path separator";
  else if (name.find("..") != std::string::npos)
    why = "it contains '..'";
  else if (name.size() > 64)
    why = "it is longer than 64 characters";
  else if (name.empty())
    why = "it is empty";
  throw ValueError("invalid model name " + shown(name) + ": " + why);
}

SemVer SemVer::parse(const std::string& s) {
  const std::string expected = ": expected MAJOR.MINOR.PATCH[-PRERELEASE], e.g. 1.2.0";
  if (s.empty() || s.size() > 64 || s.find('\0') != std::string::npos)
    throw ValueError("invalid version " + shown(s) + expected);
  if (s.find('+') != std::string::npos)
    throw ValueError("invalid version " + shown(s) + ": build metadata (+...) is not supported");
  const size_t dash = s.find('-');
  const std::string core = s.substr(0, dash);
  const auto parts = split(core, '.');
  if (parts.size() != 3) throw ValueError("invalid version " + shown(s) + expected);
  SemVer v;
  v.major = parse_number(parts[0], s);
  v.minor = parse_number(parts[1], s);
  v.patch = parse_number(parts[2], s);
  if (dash != std::string::npos) {
    v.pre = s.substr(dash + 1);
    for (const std::string& id : split(v.pre, '.')) {
      if (id.empty()) throw ValueError("invalid version " + shown(s) + ": empty prerelease identifier");
      for (char c : id)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
          throw ValueError("invalid version " + shown(s) + ": prerelease identifiers are A-Z a-z 0-9 -");
      if (is_digits(id) && id.size() > 1 && id[0] == '0')
        throw ValueError("invalid version " + shown(s) + ": numeric prerelease identifiers have no leading zeros");
    }
  }
  return v;
}

std::string SemVer::str() const {
  std::string s = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
  return pre.empty() ? s : s + "-" + pre;
}

int compare(const SemVer& a, const SemVer& b) {
  auto cmp = [](uint64_t x, uint64_t y) { return x < y ? -1 : (x > y ? 1 : 0); };
  if (int c = cmp(a.major, b.major)) return c;
  if (int c = cmp(a.minor, b.minor)) return c;
  if (int c = cmp(a.patch, b.patch)) return c;
  if (a.pre.empty() || b.pre.empty()) return a.pre.empty() == b.pre.empty() ? 0 : (a.pre.empty() ? 1 : -1);
  const auto x = split(a.pre, '.'), y = split(b.pre, '.');
  for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
    const bool nx = is_digits(x[i]), ny = is_digits(y[i]);
    if (nx && ny) {
      if (x[i].size() != y[i].size()) return x[i].size() < y[i].size() ? -1 : 1;
    } else if (nx != ny) {
      return nx ? -1 : 1;  // numeric identifiers sort before alphanumeric ones
    }
    if (int c = x[i].compare(y[i])) return c < 0 ? -1 : 1;
  }
  return cmp(x.size(), y.size());
}

Bump parse_bump(const std::string& s) {
  if (s == "patch") return Bump::patch;
  if (s == "minor") return Bump::minor;
  if (s == "major") return Bump::major;
  throw ValueError("invalid bump " + shown(s) + ": expected patch, minor or major");
}

SemVer bump(const std::optional<SemVer>& latest, Bump how) {
  if (!latest) return SemVer{1, 0, 0, ""};
  SemVer v = *latest;
  const bool pre = !v.pre.empty();
  v.pre.clear();
  if (how == Bump::major) {
    ++v.major;
    v.minor = v.patch = 0;
  } else if (how == Bump::minor) {
    ++v.minor;
    v.patch = 0;
  } else if (!pre) {
    ++v.patch;  // 1.2.3-rc.1 -> 1.2.3 (the release of that prerelease)
  }
  return v;
}

const char* stage_name(Stage s) {
  switch (s) {
    case Stage::none:
      return "none";
    case Stage::staging:
      return "staging";
    case Stage::production:
      return "production";
    case Stage::archived:
      return "archived";
  }
  return "?";
}

Stage parse_stage(const std::string& s) {
  if (s == "none") return Stage::none;
  if (s == "staging") return Stage::staging;
  if (s == "production") return Stage::production;
  if (s == "archived") return Stage::archived;
  throw ValueError("invalid stage " + shown(s) + ": expected staging or production");
}

Ref Ref::parse(const std::string& s) {
  Ref r;
  const size_t at = s.find('@');
  r.name = s.substr(0, at);
  r.selector = at == std::string::npos ? "latest" : s.substr(at + 1);
  check_name(r.name);
  if (r.selector != "latest" && r.selector != "production" && r.selector != "staging") {
    try {
      SemVer::parse(r.selector);
    } catch (const ValueError& e) {
      throw ValueError("invalid model reference " + shown(s) +
                       ": after '@' expected production, staging, latest or a version (" + e.what() + ")");
    }
  }
  return r;
}

double ab_fraction(const std::string& name, const std::string& request_id) {
  const std::string h = sha256_hex(name + "\n" + request_id);
  uint64_t x = std::stoull(h.substr(0, 16), nullptr, 16);  // the first 8 bytes, big-endian
  return std::ldexp(static_cast<double>(x >> 11), -53);    // exact in a double, in [0, 1)
}

std::string ab_choose(const AbConfig& ab, const std::string& name, const std::string& request_id) {
  return ab_fraction(name, request_id) < ab.split ? ab.treatment : ab.control;
}

// ---------------------------------------------------------------- JSON forms

nlohmann::json VersionRecord::to_json() const {
  nlohmann::json j = {{"name", name},
                      {"version", version},
                      {"stage", stage_name(stage)},
                      {"sha256", sha256},
                      {"stored_sha256", stored_sha256},
                      {"size", size},
                      {"encrypted", encrypted},
                      {"created", created},
                      {"user", user},
                      {"meta_sha256", meta_sha256},
                      {"artifact", artifact_path}};
  if (encrypted) j["key_id"] = key_id;
  if (!metadata.is_null()) j["metadata"] = metadata;
  return j;
}

nlohmann::json ModelSummary::to_json() const {
  nlohmann::json j = {{"name", name}, {"history", history}, {"deleted", deleted}};
  j["production"] = production ? nlohmann::json(*production) : nlohmann::json(nullptr);
  j["staging"] = staging ? nlohmann::json(*staging) : nlohmann::json(nullptr);
  j["ab"] = ab ? nlohmann::json{{"control", ab->control}, {"treatment", ab->treatment}, {"split", ab->split}}
               : nlohmann::json(nullptr);
  j["versions"] = nlohmann::json::array();
  for (const auto& v : versions) j["versions"].push_back(v.to_json());
  return j;
}

nlohmann::json VerifyReport::to_json() const {
  return {{"ok", ok},
          {"errors", errors},
          {"warnings", warnings},
          {"artifacts_checked", artifacts_checked},
          {"audit_records", audit_records},
          {"audit_head", audit_head},
          {"first_bad_audit_line", first_bad_audit_line}};
}

}  // namespace cxr::registry
