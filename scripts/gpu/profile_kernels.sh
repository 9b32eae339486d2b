#!/usr/bin/env bash
# On the GPU machine, from the repo root: Nsight Compute on the kernels of the rows the targets
# are judged on (bench/targets.py), one step each, so that the next change to a kernel starts from
# where its time goes (throughput against the hardware's, stall reasons, occupancy) instead of a
# guess. Builds bench/kernels like scripts/gpu_kernels.sh (BUILD=... reuses a build).
#   scripts/gpu/profile_kernels.sh            all rows below
#   ROWS="decode-llama3" scripts/gpu/profile_kernels.sh   only the rows whose tag contains the text
# Leaves in $OUT (default ./gpu-out): ncu_<tag>.txt per row (the report, details page, after
# kernels_bench's own output), and the build's logs. ncu needs a Firecracker machine (KINDS.md);
# clocks are left alone (--clock-control none, METHOD.md); caches are flushed between ncu's passes
# (its default). NCU_ARGS (split on spaces, no quoting) replaces "--set detailed --page details",
# e.g. the per-instruction view that names the SASS lines with excess sectors or bank conflicts:
# NCU_ARGS="--set detailed --section SourceCounters --page source --print-source sass" (long: grep
# it for LDGSTS).
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
BUILD=${BUILD:-/tmp/build-kernels-gpu}
if [ ! -x "$BUILD/kernels_bench" ]; then
  TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
  cmake -S bench/kernels -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    ${TORCH_PREFIX:+-DCMAKE_PREFIX_PATH=$TORCH_PREFIX} >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
  cmake --build "$BUILD" -j"$(nproc)" --target kernels_bench >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
NCU=${NCU:-$(command -v ncu || echo /opt/nvidia/nsight-compute/ncu)}
# tag | kernels_bench arguments (each selects one row: model, batch, query length, sparsity, lookup)
rows=(
  "decode-llama3-512k-b1-paper|--context 524288 --model llama3-8b --batch 1 --query-len 1 --sparsity 0.9 --lookup paper"
  "decode-llama3-512k-b1-accurate|--context 524288 --model llama3-8b --batch 1 --query-len 1 --sparsity 0.9 --lookup accurate"
  "decode-llama3-512k-b1-paper-two-level|--context 524288 --model llama3-8b --batch 1 --query-len 1 --sparsity 0.9 --lookup paper-two-level"
  "decode-llama3-512k-b1-accurate-two-level|--context 524288 --model llama3-8b --batch 1 --query-len 1 --sparsity 0.9 --lookup accurate-two-level"
  # The attention's fixed cost (bench/kernels/NOTES.md run 12): almost nothing selected.
  "decode-llama3-512k-b1-fixed-cost|--context 524288 --model llama3-8b --batch 1 --query-len 1 --sparsity 0.999 --lookup paper"
  # The accurate lookup over one level (the default below 256K) against the paper's at batch 8:
  # 29-41% slower for ~20% more bytes (bench/kernels/NOTES.md run 18). Source counters name where.
  "decode-llama3-128k-b8-paper|--context 131072 --model llama3-8b --batch 8 --query-len 1 --sparsity 0.9 --lookup paper"
  "decode-llama3-128k-b8-accurate|--context 131072 --model llama3-8b --batch 8 --query-len 1 --sparsity 0.9 --lookup accurate"
  "decode-llama2-512k-b1-two-level|--context 524288 --model llama2-7b --batch 1 --query-len 1 --sparsity 0.9 --lookup paper-two-level"
  "prefill-llama2-512k-1k-paper|--context 524288 --model llama2-7b --query-len 1024 --sparsity 0.9 --lookup paper"
  "prefill-llama2-512k-1k-ws|--context 524288 --model llama2-7b --query-len 1024 --sparsity 0.9 --lookup paper-ws"
  "prefill-llama3-512k-q64-paper|--context 524288 --model llama3-8b --query-len 64 --sparsity 0.9 --lookup paper"
)
status=0
for row in "${rows[@]}"; do
  tag=${row%%|*}
  args=${row#*|}
  [ -n "${ROWS:-}" ] && [[ "$tag" != *"$ROWS"* ]] && continue
  echo "== $tag"
  # shellcheck disable=SC2086
  "$NCU" --clock-control none --nvtx --nvtx-include "profiled step/" ${NCU_ARGS:---set detailed --page details} \
    "$BUILD/kernels_bench" --profile --out /dev/null $args >"$OUT/ncu_$tag.txt" 2>&1 || status=1
  # The headline of each kernel: its name, duration, and throughput against the hardware's.
  grep -E "^  [a-z_]+_kernel|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy" \
    "$OUT/ncu_$tag.txt" | head -60
done
exit $status
