// Programmatic dependent launch (kernels/launch.h) for the kernels of the decode chain: the host
// launch and the two device calls every such kernel makes.
//
// The contract of a kernel launched by launch_chained: every CTA calls wait_for_previous_grid()
// before its first read of anything an earlier kernel of the stream may still be writing and before
// its first global write (the previous kernel may still be reading a buffer this one reuses), and
// before it returns (so that its completion implies its predecessor's, for the kernel after it).
// The one exception, a launch beside the previous one (decode_attention.h DecodeLaunch::next_beside
// / beside_previous), waits only before it returns; its predecessor allows it after its own wait.
// What it may do before: compute indices, read its arguments and data no kernel of the step
// writes (the index: centroids, cluster sizes). allow_next_grid() lets the next kernel start
// launching; it only schedules, the next kernel's wait still waits for this whole grid, so each
// kernel calls it first thing, but the weight products, which call it after streaming their
// weights (kernels/skinny_gemm.cu says why).
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "kernels/launch.h"

namespace squeezeserve::kernels::detail {

__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_next_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether launches on the current device use PDL: the switch is on and the device is sm_90+.
bool use_programmatic_launch();

// kernel<<<grid, block, smem, stream>>>(args...), with PDL where use_programmatic_launch().
template <typename... Params, typename... Args>
cudaError_t launch_chained(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                           Args&&... args) {
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attribute;
  config.numAttrs = use_programmatic_launch() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace squeezeserve::kernels::detail
