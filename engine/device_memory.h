// Peak device memory of a stretch of work (the ingest reports it; docs/performance.md). libtorch's
// CUDA caching allocator keeps the statistics; on the CPU both functions do nothing / return -1.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace squeezeserve {

void ResetPeakDeviceMemory(at::Device device);
// Bytes allocated at the peak since the last reset (-1 when unknown: the CPU, a build without CUDA).
int64_t PeakDeviceMemory(at::Device device);

}  // namespace squeezeserve
