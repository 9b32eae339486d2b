#pragma once
// Declarations only, for scripts/cuda_syntax/check.sh (a syntax check of the CUDA-only code without a GPU).
#include <cuda_runtime_api.h>
#include <c10/core/Device.h>
namespace c10 { namespace cuda {
struct CUDAStream { cudaStream_t stream() const { return nullptr; } operator cudaStream_t() const { return nullptr; } c10::DeviceIndex device_index() const {return 0;} };
inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex = -1) { return {}; }
inline CUDAStream getStreamFromPool(bool = false, c10::DeviceIndex = -1) { return {}; }
inline void setCurrentCUDAStream(CUDAStream) {}
struct CUDAStreamGuard { explicit CUDAStreamGuard(CUDAStream) {} };
}}
