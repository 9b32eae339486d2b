#include "engine/device_memory.h"

#ifdef SQUEEZESERVE_CUDA_KERNELS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace squeezeserve {

void ResetPeakDeviceMemory(at::Device device) {
#ifdef SQUEEZESERVE_CUDA_KERNELS
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#else
  (void)device;
#endif
}

int64_t PeakDeviceMemory(at::Device device) {
#ifdef SQUEEZESERVE_CUDA_KERNELS
  if (device.is_cuda()) {
    // allocated_bytes[0]: the aggregate over small and large pools.
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index()).allocated_bytes[0].peak;
  }
#else
  (void)device;
#endif
  return -1;
}

}  // namespace squeezeserve
