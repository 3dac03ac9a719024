// The file-based model registry: named models with semantic versions, stages (staging,
// production, archived), rollback, A/B routing, SHA-256 integrity, optional AES-256-GCM
// encryption at rest, a hash-chained audit log and per-version performance logs. The
// library behind `cxr registry` and `cxr infer registry:NAME@production`; native apps link
// it (target cxr_registry) to load "the production model".
//
// Layout of a registry directory:
//   index.json               the state: models, versions, stages, A/B tests, settings, and
//                            the audit log's head (record count, hash, the last record)
//   audit.log                append-only JSON lines, one per action, hash-chained
//   lock                     advisory lock file (flock): shared to read, exclusive to change
//   models/NAME/VERSION/     model.safetensors (model.safetensors.enc when encrypted),
//                            meta.json (the registration metadata), perf.log[.1 ...]
//
// Design:
// - Every change runs under the exclusive lock: read index.json, check the audit tail,
//   change, then commit. The commit point is the atomic replacement of index.json (temp
//   file, fsync, rename, fsync of the directory). The new index already holds the new audit
//   record (its text, its hash and the record count); after the rename that record is
//   appended to audit.log (O_APPEND, one write, fsync). A crash before the rename leaves the
//   old state (plus temp files, swept by the next change); a crash after it leaves the new
//   state with the log at most one record short, possibly with a torn partial line. The
//   next open (and every change) completes it: when the log's last complete record is the
//   one the pending record follows and the torn tail is a prefix of it, the tail is cut and
//   the pending record appended ("roll forward"). Anything else at the tail is not a crash
//   but a modification: changes (and loads, which are audited) are refused and `verify`
//   names the line. (Removing only the last line looks exactly like that crash, so the
//   record is restored from the index.)
// - Artifacts are written into models/NAME/.staging-* (fsync) and renamed into place before
//   the index commit; a crash leaves an unreferenced folder, reported by verify as a warning
//   and replaced or swept by the next registration. Deletion commits first, then removes.
// - Audit records: a JSON object with seq (1, 2, ...), time (UTC), user, pid, action and
//   its details, prev (the hash of the previous record, 64 zeros for the first) and, last,
//   hash = SHA-256 of the record's text without its hash field. verify checks, line by line,
//   that each record is well formed, hashes to its own hash field (an edited line), has
//   seq = its line number (a removed, inserted or swapped line) and follows the previous
//   record (a replaced line), then that the last record is the index's head (a removed last
//   line). The first failing line is reported. The chain proves the log was not changed
//   behind the registry's back by anyone who cannot also rewrite index.json; keep the head
//   hash printed by `verify` elsewhere to anchor it.
// - Audit records never hold image content, image paths or patient data: actions, model
//   names, versions, hashes, counts, timings, the OS user and a free-text reason.
// - Integrity: SHA-256 of the model file and of the stored artifact (they differ when
//   encrypted) and of meta.json are recorded at registration; the stored artifact is hashed
//   on every load and promotion (and rollback), and a mismatch refuses with an error naming
//   the file and records an "integrity_failure" event.
// - Encryption (`init --encrypt`): AES-256-GCM, a fresh 96-bit nonce per artifact, the
//   model's NAME@VERSION as associated data (an artifact moved to another version does not
//   decrypt). Key: 32 bytes from OpenOptions::key, else CXR_REGISTRY_KEY (64 hex digits),
//   else the file named by CXR_REGISTRY_KEY_FILE (32 raw bytes or 64 hex digits). The index
//   records the key's id (a hash of it) so a wrong key is reported as such.
// - A/B routing: treatment when (first 8 bytes of SHA-256(name + "\n" + request id), as a
//   big-endian integer) / 2^64 < split, else control (the fraction is taken from the top 53
//   bits, exact in a double): deterministic, stateless, uniform.
// - Locks are flock(2) on REGISTRY/lock, released by the kernel when a process dies, so a
//   crash never leaves the registry locked. They coordinate processes of one machine, not a
//   network file system shared between machines.
// - Names: [A-Za-z0-9][A-Za-z0-9._-]{0,63} without "..". Versions: MAJOR.MINOR.PATCH with
//   an optional -prerelease (semver 2.0 precedence); deleted version numbers are not reused.
//
// Every method opens, locks and reads the directory afresh, so a Registry object may be
// used from several threads and any number of processes at once.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "nn/serialize.h"

namespace cxr::registry {

// ---------------------------------------------------------------- names and versions

// Throws cxr::ValueError unless `name` is [A-Za-z0-9][A-Za-z0-9._-]{0,63} without "..".
void check_name(const std::string& name);
bool valid_name(const std::string& name);

struct SemVer {
  uint64_t major = 0, minor = 0, patch = 0;
  std::string pre;  // prerelease identifiers ("rc.1"), empty for a release
  // MAJOR.MINOR.PATCH[-PRERELEASE]; numbers without leading zeros, below 10^9. Throws
  // cxr::ValueError naming the string.
  static SemVer parse(const std::string& s);
  std::string str() const;
};
// Semver 2.0 precedence: <0, 0, >0.
int compare(const SemVer& a, const SemVer& b);
inline bool operator<(const SemVer& a, const SemVer& b) { return compare(a, b) < 0; }

enum class Bump { patch, minor, major };
Bump parse_bump(const std::string& s);  // "patch", "minor", "major"
// The next version after `latest` (1.0.0 when there is none): 1.2.3 -> 1.2.4 / 1.3.0 / 2.0.0.
SemVer bump(const std::optional<SemVer>& latest, Bump how);

enum class Stage { none, staging, production, archived };
const char* stage_name(Stage s);
Stage parse_stage(const std::string& s);

// A model reference: "name" (the latest version that is not archived), "name@latest",
// "name@production", "name@staging" or "name@1.2.0".
struct Ref {
  std::string name;
  std::string selector;  // "latest", "production", "staging" or a version
  static Ref parse(const std::string& s);
};

// ---------------------------------------------------------------- hashing and keys

std::string sha256_hex(const std::string& bytes);
std::string sha256_file(const std::string& path);  // throws cxr::FileError naming the file

class Key {
 public:
  static Key from_hex(const std::string& hex, const std::string& what);  // 64 hex digits
  static Key from_file(const std::string& path);                         // 32 raw bytes, or 64 hex digits (+ newline)
  // CXR_REGISTRY_KEY, else CXR_REGISTRY_KEY_FILE, else nothing.
  static std::optional<Key> from_env();
  static Key generate();   // from the system's random source
  std::string id() const;  // 16 hex digits identifying the key (not the key)
  std::string hex() const;
  const std::array<unsigned char, 32>& bytes() const { return bytes_; }

 private:
  std::array<unsigned char, 32> bytes_{};
};

// ---------------------------------------------------------------- records

struct VersionRecord {
  std::string name, version;
  Stage stage = Stage::none;
  std::string sha256;         // of the model file as registered
  std::string stored_sha256;  // of the stored artifact (= sha256 unless encrypted)
  uint64_t size = 0;          // bytes of the model file
  bool encrypted = false;
  std::string key_id;         // when encrypted
  std::string created;        // UTC, ISO 8601
  std::string user;           // OS user who registered it
  std::string meta_sha256;    // of meta.json
  std::string artifact_path;  // the stored artifact file
  nlohmann::json metadata;    // meta.json (filled by resolve/show; null in list)
  nlohmann::json to_json() const;
};

struct AbConfig {
  std::string control, treatment;
  double split = 0;  // fraction of requests routed to the treatment, in [0, 1]
};

struct ModelSummary {
  std::string name;
  std::optional<std::string> production, staging;
  std::vector<std::string> history;  // earlier production versions, most recent last
  std::vector<std::string> deleted;
  std::optional<AbConfig> ab;
  std::vector<VersionRecord> versions;  // ascending by version
  nlohmann::json to_json() const;
};

struct VerifyReport {
  bool ok = true;
  std::vector<std::string> errors;    // each names the file (and line) at fault
  std::vector<std::string> warnings;  // leftovers of interrupted writes, pending records
  int64_t artifacts_checked = 0;
  int64_t audit_records = 0;
  std::string audit_head;            // hash of the last audit record
  int64_t first_bad_audit_line = 0;  // 1-based; 0 when the log is intact
  nlohmann::json to_json() const;
};

// ---------------------------------------------------------------- the registry

struct InitOptions {
  bool encrypt = false;                // AES-256-GCM at rest; needs a key (OpenOptions or env)
  uint64_t perf_max_bytes = 1u << 20;  // rotate a perf.log past this size
  int perf_keep = 5;                   // rotated perf logs kept per version
};

struct OpenOptions {
  std::optional<Key> key;  // else CXR_REGISTRY_KEY / CXR_REGISTRY_KEY_FILE when needed
  std::string user;        // recorded in the audit log; default the OS user
};

struct RegisterOptions {
  std::string version;  // explicit version, or empty: bump the highest one
  Bump bump = Bump::patch;
  // Free-form JSON object recorded in meta.json. Conventional keys: "metrics" (object),
  // "dataset" ({"name", "version", "manifest_sha256"}), "training_config" (object),
  // "git_revision", "description". The registry adds name, version, created, user, host,
  // engine_version, the artifact's hashes and the model's classes and input shape.
  nlohmann::json metadata = nlohmann::json::object();
  std::string reason;  // recorded in the audit log
};

struct LoadOptions {
  bool audit = true;                  // append a "load" record
  std::string purpose = "inference";  // recorded with it
};

struct LoadedVersion {
  VersionRecord record;
  nn::LoadedModel model;
};

class Registry {
 public:
  // Creates a registry in `dir` (created if missing; an existing folder must be empty or an
  // interrupted init). Throws cxr::FileError if `dir` already holds a registry.
  static Registry init(const std::string& dir, const InitOptions& init = {}, const OpenOptions& opt = {});
  // Opens an existing registry (completing an interrupted change's audit record). Throws
  // cxr::FileError naming `dir` when it is missing or not a registry.
  static Registry open(const std::string& dir, const OpenOptions& opt = {});

  const std::string& dir() const { return dir_; }
  bool encrypted() const;

  // Copies `model_file` in (checking that it is a loadable cxr model), records its hashes
  // and metadata and returns the new version (stage none).
  VersionRecord register_model(const std::string& name, const std::string& model_file, const RegisterOptions& opt = {});

  std::vector<ModelSummary> list(const std::string& name = "") const;  // all models, or one
  VersionRecord resolve(const std::string& ref) const;                 // with metadata
  // Stage::staging or Stage::production. The previous production version stays (stage
  // none) and is remembered for rollback; the artifact's hash is checked first.
  VersionRecord promote(const std::string& name, const std::string& version, Stage to, const std::string& reason = "");
  // Makes the previous production version production again; returns it.
  VersionRecord rollback(const std::string& name, const std::string& reason = "");
  void archive(const std::string& name, const std::string& version, const std::string& reason = "");
  // Refused for the production version and for versions in an A/B test.
  void remove(const std::string& name, const std::string& version, const std::string& reason = "");

  AbConfig ab_set(const std::string& name, const AbConfig& ab, const std::string& reason = "");
  std::optional<AbConfig> ab_get(const std::string& name) const;
  void ab_clear(const std::string& name, const std::string& reason = "");
  std::string ab_route(const std::string& name, const std::string& request_id) const;

  // Resolves `ref`, checks the artifact's hash (and decrypts it), rebuilds the model.
  LoadedVersion load(const std::string& ref, const LoadOptions& opt = {});
  // The verified model file bytes of a version (decrypted), for apps with their own loader.
  std::string artifact_bytes(const VersionRecord& v) const;

  // Appends an audit record {action, ...details}. `action` is [a-z_]{1,32}; `details` an
  // object without the record's own keys (seq, time, user, pid, prev, hash, action).
  void audit(const std::string& action, const nlohmann::json& details);
  std::vector<nlohmann::json> audit_log() const;  // every record, oldest first

  // Appends {"time", ...entry} to the version's perf.log (rotated by size).
  void record_perf(const std::string& name, const std::string& version, const nlohmann::json& entry);
  std::vector<nlohmann::json> perf_log(const std::string& name, const std::string& version) const;

  // Hashes every artifact and meta.json, checks stage invariants and the audit chain (after
  // completing a pending audit record, as open does). Leftovers of interrupted writes are
  // warnings, not errors.
  VerifyReport verify() const;

 private:
  Registry(std::string dir, OpenOptions opt) : dir_(std::move(dir)), opt_(std::move(opt)) {}
  std::string dir_;
  OpenOptions opt_;
};

// A/B routing without a registry: the fraction in [0, 1) that `request_id` hashes to, and
// the version it is routed to.
double ab_fraction(const std::string& name, const std::string& request_id);
std::string ab_choose(const AbConfig& ab, const std::string& name, const std::string& request_id);

// One call for training tools: opens the registry at `dir` (creating it when `dir` is
// missing or empty) and registers `model_file` under `name` with `opt.metadata`.
VersionRecord register_model_file(const std::string& dir, const std::string& name, const std::string& model_file,
                                  const RegisterOptions& opt = {});

}  // namespace cxr::registry
