#pragma once
// Declarations only, for scripts/cuda_syntax/check.sh (a syntax check of the CUDA-only code without a GPU).
#include <c10/cuda/CUDAStream.h>
namespace at { namespace cuda { struct CUDAEvent { CUDAEvent(unsigned = 0) {} void record() {} void record(c10::cuda::CUDAStream) {} void block(c10::cuda::CUDAStream) {} bool query() const {return true;} void synchronize() const {} float elapsed_time(const CUDAEvent&) const {return 0;} }; }}
