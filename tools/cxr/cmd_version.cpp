// `cxr version` (also `cxr --version`): the engine version and how it was built.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "runtime/cuda.h"
#include "tools/cxr/commands.h"

namespace cxr::cli {

Command version_command() {
  return {"version", "print the engine version and build information", [](CLI::App&) -> std::function<int()> {
            return [] {
              std::printf("cxr %s\n", CXR_VERSION_STRING);
              if (!cuda::built_with_cuda()) {
                std::printf("CUDA: not built (CPU backend only)\n");
                return 0;
              }
              const int n = cuda::device_count();
              std::printf("CUDA: built (runtime %s), %d device%s\n", cuda::runtime_version().c_str(), n,
                          n == 1 ? "" : "s");
              for (int i = 0; i < n; ++i) std::printf("  %d: %s\n", i, cuda::device_description(i).c_str());
              return 0;
            };
          }};
}

}  // namespace cxr::cli
