#pragma once
// Declarations only, for scripts/cuda_syntax/check.sh (a syntax check of the CUDA-only code without a GPU).
#include <c10/core/Device.h>
#include <c10/cuda/CUDAStream.h>
namespace c10 { namespace cuda { struct CUDAGuard { explicit CUDAGuard(c10::Device) {} explicit CUDAGuard(c10::DeviceIndex) {} }; }}
