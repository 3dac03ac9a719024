// The `cxr` command: git-style subcommands, `cxr <command> [options]`.
//
//   cxr | cxr --help | cxr help      list the commands
//   cxr help <command>               a command's options (same as cxr <command> --help)
//   cxr --version | cxr version      engine version and build information
//
// Exit codes: 0 success, 1 an error while running ("cxr <command>: error: ..."), 2 bad
// usage (unknown command or option, bad value).
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "runtime/error.h"
#include "tools/cxr/commands.h"

namespace {

using cxr::cli::Command;

void print_commands(std::FILE* out, const std::vector<Command>& commands) {
  std::fprintf(out, "usage: cxr <command> [options]\n\ncommands:\n");
  for (const Command& c : commands) std::fprintf(out, "  %-10s %s\n", c.name.c_str(), c.summary.c_str());
  std::fprintf(out, "\n'cxr <command> --help' shows a command's options; 'cxr --version' the version.\n");
}

const Command* find_command(const std::vector<Command>& commands, const std::string& name) {
  for (const Command& c : commands)
    if (c.name == name) return &c;
  return nullptr;
}

// argv[0] is the command's name; the rest are its options.
int run_command(const Command& cmd, int argc, char** argv) {
  CLI::App app{cmd.summary, "cxr " + cmd.name};
  std::function<int()> run;
  try {
    run = cmd.setup(app);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help: the options on stdout
    std::fprintf(stderr, "cxr %s: error: %s\nRun 'cxr %s --help' for the options.\n", cmd.name.c_str(), e.what(),
                 cmd.name.c_str());
    return 2;
  }
  try {
    return run();
  } catch (const cxr::cli::UsageError& e) {
    std::fprintf(stderr, "cxr %s: error: %s\nRun 'cxr %s --help' for the options.\n", cmd.name.c_str(), e.what(),
                 cmd.name.c_str());
    return 2;
  } catch (const std::exception& e) {  // cxr::Error and anything else the library lets through
    std::fprintf(stderr, "cxr %s: error: %s\n", cmd.name.c_str(), e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<Command> commands = cxr::cli::all_commands();
  const std::string first = argc > 1 ? argv[1] : "";
  if (argc < 2 || first == "--help" || first == "-h" || (first == "help" && argc == 2)) {
    print_commands(stdout, commands);
    return 0;
  }
  if (first == "help") {  // cxr help <command>
    const Command* c = find_command(commands, argv[2]);
    if (c == nullptr) {
      std::fprintf(stderr, "cxr: unknown command '%s'\n\n", argv[2]);
      print_commands(stderr, commands);
      return 2;
    }
    char help_flag[] = "--help";
    char* help_argv[] = {argv[2], help_flag};
    return run_command(*c, 2, help_argv);
  }
  if (first == "--version" || first == "-V") return run_command(*find_command(commands, "version"), 1, argv + 1);
  const Command* c = find_command(commands, first);
  if (c == nullptr) {
    std::fprintf(stderr, "cxr: unknown command '%s'\n\n", first.c_str());
    print_commands(stderr, commands);
    return 2;
  }
  return run_command(*c, argc - 1, argv + 1);
}
