// The PDL switch (launch.h) and the device check behind launch_chained (chained_launch.cuh).
#include <atomic>

#include "kernels/chained_launch.cuh"

namespace squeezeserve::kernels {
namespace {

std::atomic<bool> g_programmatic_launch{true};

}  // namespace

void set_programmatic_launch(bool on) { g_programmatic_launch.store(on, std::memory_order_relaxed); }
bool programmatic_launch_enabled() { return g_programmatic_launch.load(std::memory_order_relaxed); }

namespace detail {

bool use_programmatic_launch() {
  if (!programmatic_launch_enabled()) return false;
  // Compute capability per device, asked once (0 = not asked yet; -1 = the query failed).
  constexpr int kMaxDevices = 64;
  static std::atomic<int> major[kMaxDevices] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return false;
  int m = major[dev].load(std::memory_order_relaxed);
  if (m == 0) {
    if (cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) m = -1;
    major[dev].store(m, std::memory_order_relaxed);
  }
  return m >= 9;
}

}  // namespace detail
}  // namespace squeezeserve::kernels
