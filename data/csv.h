// CSV records (RFC 4180): comma-separated fields; a double-quoted field may hold commas,
// line breaks and "" for a quote; unquoted fields are trimmed of spaces and tabs; CRLF and
// LF line ends; a UTF-8 byte order mark is skipped; blank lines are skipped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cxr::data {

struct CsvRecord {
  int64_t line = 0;  // physical line where the record starts (1-based)
  std::vector<std::string> fields;
};

// Parses `text`; `name` (a file name) prefixes errors such as an unterminated quote
// (cxr::ValueError "name:line: ...").
std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& name);

}  // namespace cxr::data
