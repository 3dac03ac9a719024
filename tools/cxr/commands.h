// The registry of `cxr` subcommands.
//
// A subcommand is one file (tools/cxr/cmd_<name>.cpp) defining a function that returns
// its Command: a name, a one-line summary, and `setup`, which declares the command's
// options on a CLI11 App and returns the function that runs it once the options are
// parsed. To add one: write the file, declare its factory below, append it to
// all_commands(), and list the file in tools/CMakeLists.txt.
//
// Exit codes (main.cpp): the run function's return value; 2 for bad usage (a CLI11
// parse error or a UsageError thrown by the command); 1 for a cxr::Error or any other
// exception, printed as "cxr <command>: error: <message>".
#pragma once

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace cxr::cli {

struct Command {
  std::string name;     // "synth"
  std::string summary;  // one line for `cxr --help`
  std::function<std::function<int()>(CLI::App&)> setup;
};

// Bad usage found after parsing (options that are each fine but conflict, or values
// the library rejects): reported like a parse error, exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

Command synth_command();
Command validate_command();
Command eval_command();
Command version_command();
Command infer_command();
Command train_command();
Command gradcam_command();
Command bench_command();
Command registry_command();

// Every command, in the order `cxr --help` lists them.
inline std::vector<Command> all_commands() { return {synth_command(), train_command(), infer_command(), eval_command(), gradcam_command(), validate_command(), registry_command(), bench_command(), version_command()}; }

}  // namespace cxr::cli
