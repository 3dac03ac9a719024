// Registry support: SHA-256 and AES-256-GCM through OpenSSL's EVP interface, keys,
// durable file writes and appends, the flock-based lock, time and user names.
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>

#include "registry/internal.h"
#include "runtime/error.h"

namespace cxr::registry {

namespace {

std::string errno_text() { return std::strerror(errno); }

std::string to_hex(const unsigned char* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = digits[p[i] >> 4];
    s[2 * i + 1] = digits[p[i] & 15];
  }
  return s;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};

std::unique_ptr<EVP_MD_CTX, MdCtxFree> sha256_ctx() {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw Error("SHA-256: OpenSSL init failed");
  return ctx;
}

std::string sha256_final(EVP_MD_CTX* ctx) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx, md, &n) != 1) throw Error("SHA-256: OpenSSL digest failed");
  return to_hex(md, n);
}

// Streams a file's bytes to fn in 64 KiB chunks (a directory or a read error: FileError).
void read_chunks(const std::string& path, const std::function<void(const char*, size_t)>& fn) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw FileError("cannot open '" + path + "': " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw FileError("cannot read '" + path + "': it is a directory");
  }
  std::string buf(1 << 16, '\0');
  for (;;) {
    const ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const std::string e = errno_text();
      ::close(fd);
      throw FileError("error reading '" + path + "': " + e);
    }
    if (r == 0) break;
    fn(buf.data(), static_cast<size_t>(r));
  }
  ::close(fd);
}

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  auto ctx = sha256_ctx();
  if (EVP_DigestUpdate(ctx.get(), bytes.data(), bytes.size()) != 1) throw Error("SHA-256: OpenSSL digest failed");
  return sha256_final(ctx.get());
}

std::string sha256_file(const std::string& path) {
  auto ctx = sha256_ctx();
  read_chunks(path, [&](const char* p, size_t n) { EVP_DigestUpdate(ctx.get(), p, n); });
  return sha256_final(ctx.get());
}

// ---------------------------------------------------------------- keys

Key Key::from_hex(const std::string& hex, const std::string& what) {
  std::string h = hex;
  while (!h.empty() && (h.back() == '\n' || h.back() == '\r' || h.back() == ' ')) h.pop_back();
  if (h.size() != 64)
    throw ValueError(what + ": expected a 256-bit key as 64 hex digits, got " + std::to_string(h.size()) +
                     " characters");
  Key k;
  for (size_t i = 0; i < 32; ++i) {
    const int a = hex_digit(h[2 * i]), b = hex_digit(h[2 * i + 1]);
    if (a < 0 || b < 0) throw ValueError(what + ": expected a 256-bit key as 64 hex digits; found a non-hex character");
    k.bytes_[i] = static_cast<unsigned char>(a * 16 + b);
  }
  return k;
}

Key Key::from_file(const std::string& path) {
  const std::string bytes = detail::read_file(path);
  if (bytes.size() == 32) {
    Key k;
    std::memcpy(k.bytes_.data(), bytes.data(), 32);
    return k;
  }
  try {
    return from_hex(bytes, "key file '" + path + "'");
  } catch (const ValueError&) {
    throw ValueError("key file '" + path + "': expected 32 raw bytes or 64 hex digits, got " +
                     std::to_string(bytes.size()) + " bytes");
  }
}

std::optional<Key> Key::from_env() {
  if (const char* h = std::getenv("CXR_REGISTRY_KEY"); h != nullptr && *h != '\0')
    return from_hex(h, "CXR_REGISTRY_KEY");
  if (const char* f = std::getenv("CXR_REGISTRY_KEY_FILE"); f != nullptr && *f != '\0') return from_file(f);
  return std::nullopt;
}

Key Key::generate() {
  Key k;
  if (RAND_bytes(k.bytes_.data(), 32) != 1) throw Error("cannot generate a key: OpenSSL's random source failed");
  return k;
}

std::string Key::id() const {
  std::string tagged = "cxr.registry.key-id\n";
  tagged.append(reinterpret_cast<const char*>(bytes_.data()), 32);
  return sha256_hex(tagged).substr(0, 16);
}

std::string Key::hex() const { return to_hex(bytes_.data(), 32); }

namespace detail {

// ---------------------------------------------------------------- files

std::string read_file(const std::string& path) {
  std::string out;
  read_chunks(path, [&](const char* p, size_t n) { out.append(p, n); });
  return out;
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

namespace {
void write_all(int fd, const std::string& data, const std::string& path) {
  const char* p = data.data();
  size_t n = data.size();
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw FileError("cannot write '" + path + "': " + errno_text());
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void write_fd(const std::string& path, int flags, const std::string& data) {
  const int fd = ::open(path.c_str(), flags | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) throw FileError("cannot open '" + path + "' for writing: " + errno_text());
  try {
    write_all(fd, data, path);
    if (::fsync(fd) != 0) throw FileError("fsync of '" + path + "' failed: " + errno_text());
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) throw FileError("close of '" + path + "' failed: " + errno_text());
}
}  // namespace

void write_new_file(const std::string& path, const std::string& data) { write_fd(path, O_CREAT | O_EXCL, data); }

void append_durable(const std::string& path, const std::string& data) { write_fd(path, O_CREAT | O_APPEND, data); }

std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

std::string os_user() {
  struct passwd pw {};
  struct passwd* res = nullptr;
  char buf[4096];
  if (::getpwuid_r(::geteuid(), &pw, buf, sizeof buf, &res) == 0 && res != nullptr && res->pw_name != nullptr)
    return res->pw_name;
  if (const char* u = std::getenv("USER"); u != nullptr && *u != '\0') return u;
  return "uid:" + std::to_string(::geteuid());
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

std::string random_hex(size_t bytes) {
  std::string b(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(b.data()), static_cast<int>(bytes)) != 1)
    throw Error("OpenSSL's random source failed");
  return to_hex(reinterpret_cast<const unsigned char*>(b.data()), bytes);
}

// ---------------------------------------------------------------- lock

Lock::Lock(const std::string& dir, Mode mode) : path_(lock_path(dir)) {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0 && mode == shared) fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);  // a read-only registry
  if (fd_ < 0) throw FileError("cannot open the registry lock '" + path_ + "': " + errno_text());
  int r;
  do r = ::flock(fd_, mode == shared ? LOCK_SH : LOCK_EX);
  while (r != 0 && errno == EINTR);
  if (r != 0) {
    const std::string e = errno_text();
    ::close(fd_);
    throw FileError("cannot lock '" + path_ + "': " + e);
  }
}

Lock::~Lock() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the lock
}

void Lock::upgrade() {
  int r;
  do r = ::flock(fd_, LOCK_EX);
  while (r != 0 && errno == EINTR);
  if (r != 0) throw FileError("cannot lock '" + path_ + "' for writing: " + errno_text());
}

// ---------------------------------------------------------------- AES-256-GCM

namespace {
constexpr char kMagic[] = "CXRAESG1";
constexpr size_t kMagicLen = 8, kNonceLen = 12, kTagLen = 16;
}  // namespace

std::string artifact_aad(const std::string& name, const std::string& version) {
  return "cxr.registry.v1:" + name + "@" + version;
}

std::string encrypt(const Key& key, const std::string& aad, const std::string& plain) {
  unsigned char nonce[kNonceLen];
  if (RAND_bytes(nonce, kNonceLen) != 1) throw Error("encryption: OpenSSL's random source failed");
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  std::string out(kMagicLen + kNonceLen + kTagLen + plain.size(), '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  std::memcpy(o, kMagic, kMagicLen);
  std::memcpy(o + kMagicLen, nonce, kNonceLen);
  int len = 0;
  bool ok = ctx && EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceLen, nullptr) == 1 &&
            EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key.bytes().data(), nonce) == 1 &&
            EVP_EncryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(aad.data()),
                              static_cast<int>(aad.size())) == 1;
  unsigned char* c = o + kMagicLen + kNonceLen + kTagLen;
  // EVP lengths are int: feed large models in chunks.
  for (size_t off = 0; ok && off < plain.size(); off += 1u << 30) {
    const int n = static_cast<int>(std::min<size_t>(plain.size() - off, 1u << 30));
    ok =
        EVP_EncryptUpdate(ctx.get(), c + off, &len, reinterpret_cast<const unsigned char*>(plain.data()) + off, n) == 1;
  }
  ok = ok && EVP_EncryptFinal_ex(ctx.get(), c + plain.size(), &len) == 1 &&
       EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagLen, o + kMagicLen + kNonceLen) == 1;
  if (!ok) throw Error("AES-256-GCM encryption failed in OpenSSL");
  return out;
}

std::string decrypt(const Key& key, const std::string& aad, const std::string& stored, const std::string& what) {
  if (stored.size() < kMagicLen + kNonceLen + kTagLen || stored.compare(0, kMagicLen, kMagic) != 0)
    throw FileError("'" + what + "' is not an encrypted registry artifact (bad header)");
  const auto* s = reinterpret_cast<const unsigned char*>(stored.data());
  const size_t n = stored.size() - kMagicLen - kNonceLen - kTagLen;
  std::string plain(n, '\0');
  auto* p = reinterpret_cast<unsigned char*>(plain.data());
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  unsigned char tag[kTagLen];
  std::memcpy(tag, s + kMagicLen + kNonceLen, kTagLen);
  bool ok = ctx && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceLen, nullptr) == 1 &&
            EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.bytes().data(), s + kMagicLen) == 1 &&
            EVP_DecryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(aad.data()),
                              static_cast<int>(aad.size())) == 1;
  const unsigned char* c = s + kMagicLen + kNonceLen + kTagLen;
  for (size_t off = 0; ok && off < n; off += 1u << 30) {
    const int m = static_cast<int>(std::min<size_t>(n - off, 1u << 30));
    ok = EVP_DecryptUpdate(ctx.get(), p + off, &len, c + off, m) == 1;
  }
  if (!ok) throw Error("AES-256-GCM decryption of '" + what + "' failed in OpenSSL");
  ok = EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagLen, tag) == 1 &&
       EVP_DecryptFinal_ex(ctx.get(), p + n, &len) == 1;
  if (!ok)
    throw FileError("cannot decrypt '" + what +
                    "': authentication failed (wrong key, or the file was modified or moved from another version)");
  return plain;
}

std::optional<Key> resolve_key(const OpenOptions& opt) {
  if (opt.key) return opt.key;
  return Key::from_env();
}

}  // namespace detail

}  // namespace cxr::registry
