// Internals of the model registry shared by its source files: durable file helpers, the
// advisory lock, AES-256-GCM, the audit record format and chain checks, and loading a
// model from bytes. Not installed; apps use registry.h.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "nn/serialize.h"
#include "registry/registry.h"

namespace cxr::registry::detail {

using nlohmann::json;

inline constexpr const char* kFormat = "cxr.registry.v1";
inline constexpr size_t kMaxRecordBytes = 64 * 1024;

// ---------------------------------------------------------------- paths
inline std::string index_path(const std::string& dir) { return dir + "/index.json"; }
inline std::string audit_path(const std::string& dir) { return dir + "/audit.log"; }
inline std::string lock_path(const std::string& dir) { return dir + "/lock"; }
inline std::string models_dir(const std::string& dir) { return dir + "/models"; }
inline std::string version_dir(const std::string& dir, const std::string& name, const std::string& v) {
  return dir + "/models/" + name + "/" + v;
}

// ---------------------------------------------------------------- files and system
std::string read_file(const std::string& path);  // throws FileError naming the file
void fsync_dir(const std::string& dir);          // best effort
// Writes `data` to a new file (O_EXCL), fsyncs it. Throws FileError.
void write_new_file(const std::string& path, const std::string& data);
// Appends `data` with one write (O_APPEND) and fsyncs. Throws FileError.
void append_durable(const std::string& path, const std::string& data);
std::string utc_now();  // 2024-05-01T12:00:00.123Z
std::string os_user();
std::string host_name();
std::string random_hex(size_t bytes);

// flock(2) on REGISTRY/lock for the object's lifetime.
class Lock {
 public:
  enum Mode { shared, exclusive };
  Lock(const std::string& dir, Mode mode);
  ~Lock();
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;
  void upgrade();  // shared -> exclusive (not atomic: re-read what you read before)

 private:
  int fd_ = -1;
  std::string path_;
};

// ---------------------------------------------------------------- encryption
// Stored format: "CXRAESG1" | 12-byte nonce | 16-byte tag | ciphertext.
std::string encrypt(const Key& key, const std::string& aad, const std::string& plain);
// Throws FileError naming `what` when the tag does not verify (wrong key or modified file).
std::string decrypt(const Key& key, const std::string& aad, const std::string& stored, const std::string& what);
std::string artifact_aad(const std::string& name, const std::string& version);

// ---------------------------------------------------------------- audit records
// Builds the line (without newline) for `event` (an object holding action and details):
// adds seq, time, user, pid, prev, and the trailing hash field.
std::string make_record(json event, int64_t seq, const std::string& prev, const std::string& user);
struct Record {
  json body;             // the record without its hash field
  std::string hash;      // the hash field
  bool self_ok = false;  // sha256(text without hash) == hash
};
// Parses a line; nullopt when it is not a well-formed record.
std::optional<Record> parse_record(const std::string& line);
inline const std::string kZeroHash(64, '0');

// The head of the log as the index records it.
struct AuditHead {
  int64_t records = 0;
  std::string hash;  // of the last record
  std::string last;  // the last record's line
};
AuditHead audit_head(const json& index);
void set_audit_head(json& index, const AuditHead& h);

enum class TailState { consistent, pending, modified };
// Compares the end of audit.log with the index's head. pending: the log is exactly the
// head record short (an interrupted commit), possibly with a torn prefix of it.
TailState check_tail(const std::string& dir, const AuditHead& head, std::string* why = nullptr);
// Under the exclusive lock: completes a pending record (cuts a torn tail, appends it).
void roll_forward(const std::string& dir, const AuditHead& head);

// Checks every line of audit.log and its end against `head`; errors go to the report.
void verify_audit(const std::string& dir, const AuditHead& head, VerifyReport& rep);

// ---------------------------------------------------------------- the index
json read_index(const std::string& dir);  // throws FileError naming the registry
// Commits `idx` with `event` as its new audit record: the index (holding the record) is
// replaced atomically, then the record is appended to audit.log.
void commit(const std::string& dir, json& idx, json event, const std::string& user);
// Under the exclusive lock, before a change: completes a pending audit record, refuses a
// modified log, removes temp files of interrupted index writes.
void prepare_change(const std::string& dir, json& idx);
template <class F>
auto with_change(const std::string& dir, F&& f) {
  Lock lock(dir, Lock::exclusive);
  json idx = read_index(dir);
  prepare_change(dir, idx);
  return f(idx);
}
// Entries of the index; throw ValueError naming what is unknown.
json& find_model(json& idx, const std::string& name);
const json& find_model(const json& idx, const std::string& name);
json& find_version(json& model, const std::string& name, const std::string& version);
std::vector<std::string> sorted_versions(const json& model);  // ascending precedence
VersionRecord version_record(const std::string& dir, const std::string& name, const std::string& version,
                             const json& entry);
// Resolves a reference against `idx` (metadata not read).
VersionRecord resolve_in(const std::string& dir, const json& idx, const std::string& ref);
std::string user_of(const OpenOptions& opt);
// Removes entries of `dir` whose names start with one of `prefixes` (leftovers).
void sweep(const std::string& dir, const std::vector<std::string>& prefixes);
inline const std::vector<std::string> kTempPrefixes = {".staging-", ".trash-"};

// ---------------------------------------------------------------- models
// Models are rebuilt from artifact bytes with nn::load_model_bytes (nn/serialize.h), so a
// decrypted artifact never touches the disk in plain text.
using nn::load_model_bytes;

// Key for an operation: the open options' key, else the environment.
std::optional<Key> resolve_key(const OpenOptions& opt);

}  // namespace cxr::registry::detail
