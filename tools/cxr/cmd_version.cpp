// `cxr version` (also `cxr --version`): the engine version, the source revision, how it
// was built, the CUDA/cuDNN/cuBLAS versions and the devices found.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "runtime/cuda.h"
#include "tools/cxr/commands.h"

namespace cxr::cli {

Command version_command() {
  return {"version", "print the engine version, build options, CUDA versions and devices",
          [](CLI::App&) -> std::function<int()> {
            return [] {
              std::printf("cxr %s (revision %s)\n", CXR_VERSION_STRING, CXR_GIT_REVISION);
              std::printf("build: %s, %s, native CPU tuning %s\n", CXR_BUILD_TYPE, CXR_CXX_COMPILER,
                          CXR_BUILD_NATIVE);
              if (!cuda::built_with_cuda()) {
                std::printf("CUDA: not built (CPU backend only)\n");
                return 0;
              }
              const std::string driver = cuda::driver_version();
              std::printf("CUDA: built with runtime %s; driver %s; cuDNN %s; cuBLAS %s\n",
                          cuda::runtime_version().c_str(), driver.empty() ? "none" : driver.c_str(),
                          cuda::cudnn_version().c_str(), cuda::cublas_version().c_str());
              const int n = cuda::device_count();
              std::printf("devices: %d\n", n);
              for (int i = 0; i < n; ++i) std::printf("  cuda:%d  %s\n", i, cuda::device_description(i).c_str());
              return 0;
            };
          }};
}

}  // namespace cxr::cli
