// CUDA devices seen by this build. Safe to call in any build: without the CUDA backend
// (or without a GPU) it reports zero devices.
#pragma once

#include <string>

namespace cxr::cuda {

// Number of usable CUDA devices (0 when the backend is absent or no driver/GPU is present).
int device_count();
// "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" or an explanation of why there is none.
std::string device_description(int index);
// CUDA runtime version the engine was built against, e.g. "13.0"; empty without CUDA.
std::string runtime_version();

}  // namespace cxr::cuda
