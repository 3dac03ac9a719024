#include "runtime/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "runtime/error.h"

namespace cxr {

namespace {

std::string errno_text() { return std::strerror(errno); }

void write_all(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw FileError("cannot write '" + path + "': " + errno_text());
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}
}  // namespace

void write_file_atomic(const std::string& path, const std::string& data) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::random_device rd;
  const std::string tmp =
      (dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd())))
          .string();
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw FileError("cannot create '" + tmp + "' to write '" + path + "': " + errno_text());
  try {
    write_all(fd, data.data(), data.size(), tmp);
    if (::fsync(fd) != 0) throw FileError("fsync of '" + tmp + "' failed: " + errno_text());
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw FileError("close of '" + tmp + "' failed: " + errno_text());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = errno_text();
    ::unlink(tmp.c_str());
    throw FileError("cannot rename '" + tmp + "' to '" + path + "': " + err);
  }
  // The rename is durable only once the directory entry is on disk.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace cxr
