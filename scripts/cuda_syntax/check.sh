#!/usr/bin/env bash
# The engine's CUDA-only code (under SQUEEZESERVE_CUDA_KERNELS), syntax-checked on a machine without
# a GPU or a CUDA libtorch: g++ -fsyntax-only with the CUDA toolkit's runtime headers, the system
# libtorch's headers, and stubs/ for the few c10/ATen CUDA headers a CPU libtorch lacks or cannot
# include (declarations only: nothing links or runs). What it catches: a header change that breaks
# the GPU build of engine/ and its GPU tests, before a device call finds it. What it cannot: any
# behaviour (tests/engine's GPU tests on the GPU machine are that check).
#   scripts/cuda_syntax/check.sh [FILE...]   (default: every engine file with CUDA-only code, and the
#                                             GPU tests of tests/engine/kernel_path_test.cc)
set -uo pipefail
cd "$(dirname "$0")/../.."
CUDA_INC=${CUDA_INC:-$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")/../include}
[ -f "$CUDA_INC/cuda_runtime_api.h" ] || { echo "no cuda_runtime_api.h under $CUDA_INC (set CUDA_INC)" >&2; exit 2; }
TORCH_INC=${TORCH_INC:-/usr/include/torch/csrc/api/include}
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(engine/kernel_attention.cc engine/decode_graphs.cc engine/device_memory.cc
                                 engine/llama_model.cc engine/squeeze/kmeans.cc tests/engine/kernel_path_test.cc)
status=0
for f in "${files[@]}"; do
  if g++ -fsyntax-only -std=gnu++17 -DSQUEEZESERVE_CUDA_KERNELS -DGTEST_HAS_PTHREAD=1 -Iscripts/cuda_syntax/stubs -I. \
       -isystem "$TORCH_INC" -isystem "$CUDA_INC" "$f"; then
    echo "ok   $f"
  else
    echo "FAIL $f"; status=1
  fi
done
exit $status
