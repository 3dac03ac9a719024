// Small helpers shared by the `cxr` subcommands.
#pragma once

#include <string>

namespace cxr::cli {

// A CSV field: quoted (with "" for a quote) when it holds a comma, quote or line break.
inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

}  // namespace cxr::cli
