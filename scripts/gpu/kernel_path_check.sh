#!/usr/bin/env bash
# GPU check of the engine's kernel path (engine/kernel_attention.h), one command on the GPU machine:
# build (tests on, benches off), the kernel-vs-libtorch tests (tests/engine/kernel_path_test.cc), the
# engine and kernel tests, then the end-to-end A/B --attention_backend=torch vs kernels at batch 1
# and 8 (scripts/gpu/e2e_bench.sh), kept within ~9 minutes on an H100.
# Run from the repo root there with .gpu-deps/ carried:
#   OUT=... scripts/gpu/kernel_path_check.sh [CONTEXT_TOKENS (65536)] [LAYERS (4)]
# Logs and JSON land in $OUT (build.log, kernel_path_test.log, *_tests.log, e2e_*.jsonl, e2e_*_summary.json).
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
context_tokens=${1:-65536}
layers=${2:-4}
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
# TESTS=ON explicitly: an earlier bench run may have cached it OFF in build-gpu/.
( source scripts/gpu/build.sh -DSQUEEZESERVE_BUILD_TESTS=ON -DSQUEEZESERVE_BUILD_BENCH=OFF > "$OUT/build.log" 2>&1 ) \
  || { grep -E "error|Error" -A3 "$OUT/build.log" | head -80; tail -20 "$OUT/build.log"; exit 1; }
echo "build: $(elapsed) s"
export LD_LIBRARY_PATH="/opt/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
tests=build-gpu/tests
run_tests() {  # name, timeout, binary, gtest args...
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc ($(elapsed) s)"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]" "$OUT/$name.log" | tail -12
  grep -E -A6 "Failure$" "$OUT/$name.log" | head -60
}
run_tests kernel_path_test 240 $tests/engine/engine_model_tests --gtest_filter='*KernelPath*:*AttentionBackend*'
grep -m1 -E "squeezed attention on" "$OUT/kernel_path_test.log" || true
run_tests engine_model_tests 120 $tests/engine/engine_model_tests --gtest_filter='-*KernelPath*:*AttentionBackend*'
run_tests engine_unit_tests 60 $tests/engine/engine_unit_tests
run_tests kernels_tests 60 $tests/kernels/kernels_tests
# The end-to-end A/B with what is left of ~9 minutes (the results are appended as they come).
budget=$(( 540 - $(elapsed) )); [ $budget -lt 90 ] && budget=90
echo "e2e: ${context_tokens} context tokens, ${layers} layers, ${budget} s budget"
SKIP_BUILD=1 NEW_TOKENS=${NEW_TOKENS:-32} REPS=${REPS:-2} BACKENDS="torch kernels" BATCHES="1 8" \
  MODES=${MODES:-"dense;squeezed --sparsity 0.9;squeezed --sparsity 0.9 --hierarchical;squeezed --sparsity 0.7"} \
  timeout "$budget" scripts/gpu/e2e_bench.sh "$context_tokens" "$layers" 2>&1 | tail -30
echo "e2e rc=${PIPESTATUS[0]} ($(elapsed) s); rows: $(cat "$OUT"/e2e_*.jsonl 2>/dev/null | wc -l)"
grep -h -E "squeezed attention on|error|Error" "$OUT"/server_*.log 2>/dev/null | head -10
