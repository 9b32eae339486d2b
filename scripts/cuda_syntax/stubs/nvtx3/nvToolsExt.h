#pragma once
// Declarations only, for scripts/cuda_syntax/check.sh (a syntax check of the CUDA-only code without a GPU).
inline int nvtxRangePushA(const char*) { return 0; }
inline int nvtxRangePop() { return 0; }
