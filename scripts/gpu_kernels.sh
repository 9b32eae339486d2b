#!/usr/bin/env bash
# On the GPU machine, from the repo root: build bench/kernels (standalone, CUDA only), run
# kernels_check (and once under compute-sanitizer on small shapes), then kernels_bench and the
# PyTorch SDPA baselines, and prints the targets table (bench/targets.py) with this run's kernel
# rows. Logs and JSON go to $OUT (default ./gpu-out).
#   scripts/gpu_kernels.sh [--quick] [--no-bench] [--prefill-only | --decode-only]
# FLUSH=write: the bench's older L2 flush (a 256 MB write; default: a read).
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
QUICK=""; BENCH=1; ONLY=""
for a in "$@"; do
  case $a in --quick) QUICK=--quick ;; --no-bench) BENCH=0 ;; --prefill-only) ONLY=--prefill-only ;; --decode-only) ONLY=--decode-only ;; esac
done
BUILD=${BUILD:-/tmp/build-kernels-gpu}
TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
cmake -S bench/kernels -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  ${TORCH_PREFIX:+-DCMAKE_PREFIX_PATH=$TORCH_PREFIX} >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" >"$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -60; exit 1; }
# Registers and spills per kernel (ptxas -v of kernels_gpu): one line per entry point.
awk '/Compiling entry function/ {
       match($0, /[0-9]+[a-z_]+_kernel/); k = substr($0, RSTART, RLENGTH); rest = substr($0, RSTART + RLENGTH)
       sub(/^[0-9]+/, "", k); t = ""
       if (match(rest, /^I(Li[0-9]+E|Lb[01]E)+/)) {
         t = substr(rest, 2, RLENGTH - 1); gsub(/Li|Lb/, "", t); gsub(/E/, ",", t); t = "<" substr(t, 1, length(t) - 1) ">"
       }
       k = k t }
     /spill stores/ { s = $5 }
     /Used [0-9]+ registers/ { print k ": " $5 " regs, " s " B spill" }' "$OUT/build.log" | sort -u | tee "$OUT/registers.log"

status=0
"$BUILD/kernels_check" 2>&1 | tee "$OUT/kernels_check.log" || status=1
if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 3 "$BUILD/kernels_check" --small --no-fork >"$OUT/sanitizer.log" 2>&1 \
    && echo "compute-sanitizer memcheck: clean" || { echo "compute-sanitizer memcheck: FAILED"; tail -30 "$OUT/sanitizer.log"; status=1; }
fi
if [ "$BENCH" = 1 ]; then
  "$BUILD/kernels_bench" $QUICK $ONLY ${FLUSH:+--flush $FLUSH} --out "$OUT/kernels_bench_sparse.json" 2>&1 | tee "$OUT/kernels_bench.log" || status=1
  python3 bench/kernels/sdpa_baseline.py --sparse "$OUT/kernels_bench_sparse.json" --out "$OUT/kernels_bench.json" \
    2>&1 | tee "$OUT/sdpa_baseline.log" || status=1
  # The targets table with this run's kernel rows (the end-to-end and accuracy rows: the committed files).
  [ -f "$OUT/kernels_bench.json" ] && python3 bench/targets.py --kernels "$OUT/kernels_bench.json" | tee "$OUT/targets.md"
fi
exit $status
