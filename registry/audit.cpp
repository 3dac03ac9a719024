// The registry's audit log: record format (JSON with seq, prev and a trailing self-hash),
// the index's copy of the head, completion of a record an interrupted commit left pending,
// and the line-by-line chain check behind `verify`.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "registry/internal.h"
#include "runtime/error.h"

namespace cxr::registry::detail {

namespace {

const std::string kHashKey = ",\"hash\":\"";
constexpr size_t kSuffix = 9 + 64 + 2;  // ,"hash":"<64 hex>"}

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// The last complete line of audit.log and any bytes after it (a torn record).
struct Tail {
  bool exists = false;
  uint64_t size = 0;
  bool has_last = false;  // a complete line exists
  std::string last;       // without its newline
  std::string partial;    // bytes after the last newline
  bool readable = true;   // false when the tail could not be delimited
};

Tail read_tail(const std::string& path) {
  Tail t;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return t;
    throw FileError("cannot open '" + path + "': " + std::strerror(errno));
  }
  t.exists = true;
  struct stat st {};
  ::fstat(fd, &st);
  t.size = static_cast<uint64_t>(st.st_size);
  const uint64_t window = std::min<uint64_t>(t.size, 2 * kMaxRecordBytes + 2);
  std::string buf(window, '\0');
  size_t got = 0;
  while (got < window) {
    const ssize_t r = ::pread(fd, buf.data() + got, window - got, static_cast<off_t>(t.size - window + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  buf.resize(got);
  const size_t nl = buf.rfind('\n');
  if (nl == std::string::npos) {
    t.partial = buf;
    t.readable = window == t.size;
    return t;
  }
  t.partial = buf.substr(nl + 1);
  const size_t prev_nl = nl == 0 ? std::string::npos : buf.rfind('\n', nl - 1);
  if (prev_nl == std::string::npos && window < t.size) {
    t.readable = false;  // a line longer than any record
    return t;
  }
  t.has_last = true;
  t.last =
      buf.substr(prev_nl == std::string::npos ? 0 : prev_nl + 1, nl - (prev_nl == std::string::npos ? 0 : prev_nl + 1));
  return t;
}

}  // namespace

std::string make_record(json event, int64_t seq, const std::string& prev, const std::string& user) {
  event["seq"] = seq;
  event["time"] = utc_now();
  event["user"] = user;
  event["pid"] = static_cast<int64_t>(::getpid());
  event["prev"] = prev;
  event.erase("hash");
  const std::string text = event.dump(-1, ' ', true, json::error_handler_t::replace);
  return text.substr(0, text.size() - 1) + kHashKey + sha256_hex(text) + "\"}";
}

std::optional<Record> parse_record(const std::string& line) {
  if (line.size() < kSuffix + 2 || line.compare(line.size() - kSuffix, 9, kHashKey) != 0 ||
      line.compare(line.size() - 2, 2, "\"}") != 0)
    return std::nullopt;
  Record r;
  r.hash = line.substr(line.size() - 66, 64);
  if (!is_hex64(r.hash)) return std::nullopt;
  const std::string text = line.substr(0, line.size() - kSuffix) + "}";
  r.body = json::parse(text, nullptr, false);
  if (r.body.is_discarded() || !r.body.is_object() || r.body.contains("hash")) return std::nullopt;
  const auto seq = r.body.find("seq");
  const auto prev = r.body.find("prev");
  const auto action = r.body.find("action");
  if (seq == r.body.end() || !seq->is_number_integer() || prev == r.body.end() || !prev->is_string() ||
      !is_hex64(prev->get<std::string>()) || action == r.body.end() || !action->is_string())
    return std::nullopt;
  r.self_ok = sha256_hex(text) == r.hash;
  return r;
}

AuditHead audit_head(const json& index) {
  AuditHead h;
  const json& a = index.at("audit");
  h.records = a.at("records").get<int64_t>();
  h.hash = a.at("hash").get<std::string>();
  h.last = a.at("last").get<std::string>();
  return h;
}

void set_audit_head(json& index, const AuditHead& h) {
  index["audit"] = {{"records", h.records}, {"hash", h.hash}, {"last", h.last}};
}

TailState check_tail(const std::string& dir, const AuditHead& head, std::string* why) {
  auto say = [&](const std::string& s) {
    if (why) *why = s;
  };
  if (head.records == 0) return TailState::consistent;
  const Tail t = read_tail(audit_path(dir));
  if (t.readable && t.partial.empty() && t.has_last && t.last == head.last) return TailState::consistent;
  const auto pending = parse_record(head.last);
  if (!pending) {
    say("the index's copy of the last audit record is malformed");
    return TailState::modified;
  }
  const std::string prev = pending->body["prev"].get<std::string>();
  bool follows = false;
  if (!t.readable)
    follows = false;
  else if (head.records == 1)
    follows = t.size == t.partial.size();  // nothing complete before it
  else if (t.has_last) {
    const auto last = parse_record(t.last);
    follows = last && last->hash == prev;
  }
  const std::string full = head.last + "\n";
  const bool torn_prefix = t.partial.size() < full.size() && full.compare(0, t.partial.size(), t.partial) == 0;
  if (follows && torn_prefix) return TailState::pending;
  say("audit.log does not end with record " + std::to_string(head.records) +
      " as the index records it (the log was modified; `cxr registry verify` names the line)");
  return TailState::modified;
}

void roll_forward(const std::string& dir, const AuditHead& head) {
  const std::string path = audit_path(dir);
  const Tail t = read_tail(path);
  if (t.exists && !t.partial.empty()) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(t.size - t.partial.size())) != 0 || ::fsync(fd) != 0) {
      const std::string e = std::strerror(errno);
      if (fd >= 0) ::close(fd);
      throw FileError("cannot cut the torn last line of '" + path + "': " + e);
    }
    ::close(fd);
  }
  append_durable(path, head.last + "\n");
  if (!t.exists) fsync_dir(dir);
}

void verify_audit(const std::string& dir, const AuditHead& head, VerifyReport& rep) {
  const std::string path = audit_path(dir);
  auto bad = [&](int64_t line, const std::string& msg) {
    if (rep.first_bad_audit_line == 0) rep.first_bad_audit_line = line;
    rep.errors.push_back(path + " line " + std::to_string(line) + ": " + msg);
    rep.ok = false;
  };
  std::string text;
  try {
    text = read_file(path);
  } catch (const FileError& e) {
    if (head.records > 0) bad(1, std::string("cannot read the audit log: ") + e.what());
    return;
  }
  int64_t n = 0;
  std::string prev_hash = kZeroHash;
  size_t pos = 0;
  bool broken = false;
  while (!broken) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++n;
    const auto rec = parse_record(line);
    if (!rec) {
      bad(n, "not a well-formed audit record (the line was edited or corrupted)");
      broken = true;
    } else if (!rec->self_ok) {
      bad(n, "its content does not match its hash (the line was edited)");
      broken = true;
    } else if (rec->body["seq"].get<int64_t>() != n) {
      bad(n, "holds record " + std::to_string(rec->body["seq"].get<int64_t>()) + " where record " + std::to_string(n) +
                 " belongs (a line was removed, inserted or moved)");
      broken = true;
    } else if (rec->body["prev"].get<std::string>() != prev_hash) {
      bad(n, "does not follow line " + std::to_string(n - 1) + ": the hash chain is broken (line " +
                 std::to_string(n - 1) + " was replaced, or this line was)");
      broken = true;
    } else {
      prev_hash = rec->hash;
    }
  }
  rep.audit_records = n;
  rep.audit_head = prev_hash;
  if (broken) return;
  const std::string partial = text.substr(pos);
  const std::string full = head.last + "\n";
  const bool pending_state =
      n == head.records - 1 && partial.size() < full.size() && full.compare(0, partial.size(), partial) == 0 && [&] {
        const auto p = parse_record(head.last);
        return p && p->body["prev"] == prev_hash;
      }();
  if (pending_state) {
    rep.warnings.push_back(
        path + ": record " + std::to_string(head.records) +
        " of an interrupted change is not written yet; opening the registry for a change completes it");
    return;
  }
  if (!partial.empty()) {
    bad(n + 1, "an incomplete record (no newline at the end of the log)");
  } else if (n < head.records) {
    bad(n + 1, "missing: the log ends after " + std::to_string(n) + " records but the index records " +
                   std::to_string(head.records) + " (lines were removed from the end)");
  } else if (n > head.records) {
    bad(head.records + 1, "not in the index: the index records " + std::to_string(head.records) +
                              " records (lines were appended behind the registry's back)");
  } else if (n > 0 && prev_hash != head.hash) {
    bad(n, "the last record is not the one the index records (the line was replaced)");
  }
}

}  // namespace cxr::registry::detail
