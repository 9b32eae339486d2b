#pragma once
// Declarations only, for scripts/cuda_syntax/check.sh (a syntax check of the CUDA-only code without a GPU).
namespace at { namespace cuda { struct CUDAGraph { void capture_begin() {} void capture_end() {} void replay() {} void reset() {} }; }}
