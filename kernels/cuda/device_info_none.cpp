// Build without the CUDA backend: no devices.
#include "kernels/cuda/device_info.h"

namespace cxr::cuda {

int device_count() { return 0; }
std::string device_description(int index) {
  return "no CUDA device " + std::to_string(index) + ": this build has no CUDA backend";
}
std::string runtime_version() { return ""; }

}  // namespace cxr::cuda
