#include "runtime/error.h"

namespace cxr::detail {

void throw_check(const char* cond, const char* file, int line, const std::string& msg) {
  // The message is for the user; the location helps the developer.
  std::ostringstream os;
  os << msg << " [check '" << cond << "' failed at " << file << ":" << line << "]";
  throw ValueError(os.str());
}

}  // namespace cxr::detail
