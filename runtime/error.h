// Errors thrown by the engine. The library never aborts on bad input: it throws
// cxr::Error (or a subclass) with a message naming the op, the values involved and
// what was expected.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace cxr {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Bad argument shapes, dtypes or values passed to a public entry point.
class ValueError : public Error {
 public:
  using Error::Error;
};

// A file that cannot be read, is truncated or is malformed.
class FileError : public Error {
 public:
  using Error::Error;
};

// Allocation failure (host or device), with the numbers in the message.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void throw_check(const char* cond, const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace cxr

// CXR_CHECK(cond, parts...) throws cxr::ValueError("<parts...>") when cond is false.
#define CXR_CHECK(cond, ...)                                                        \
  do {                                                                              \
    if (!(cond)) [[unlikely]]                                                       \
      ::cxr::detail::throw_check(#cond, __FILE__, __LINE__, ::cxr::detail::cat(__VA_ARGS__)); \
  } while (0)
