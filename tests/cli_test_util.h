// Helpers for tests that run the `cxr` binary as a child process (CXR_CLI_PATH is its
// path, set by the test's CMake file): run it, capture its output and exit code, and give
// each test a fresh temporary directory.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "data/csv.h"

namespace cxr_test {

struct Result {
  int code = -1;
  std::string output;  // stdout, plus stderr unless stdout_only
};

// Runs `cxr ARGS` through the shell with stdin from /dev/null.
inline Result run_cxr(const std::string& args, bool stdout_only = false) {
  const std::string cmd =
      std::string("'") + CXR_CLI_PATH + "' " + args + (stdout_only ? " 2>/dev/null" : " 2>&1") + " </dev/null";
  Result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// A whole file as a string ("" when it cannot be read).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The records of CSV text (header included), each a vector of fields (data/csv.h).
inline std::vector<std::vector<std::string>> parse_csv_rows(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  for (auto& r : cxr::data::parse_csv(text, "csv")) rows.push_back(std::move(r.fields));
  return rows;
}
inline std::vector<std::vector<std::string>> read_csv_rows(const std::filesystem::path& p) {
  return parse_csv_rows(slurp(p));
}

// An empty directory under the system temp dir named after the running test.
inline std::filesystem::path fresh_test_dir(const std::string& prefix) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      (prefix + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void remove_test_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace cxr_test
