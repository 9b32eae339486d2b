#!/usr/bin/env bash
# The squeezed bundles' GPU check and end-to-end A/B in one device call (~8 minutes on an H100),
# from the repo root there with .gpu-deps carried (docs/attention.md "Questions on one document";
# bench/kernels/NOTES.md run 32):
#   1. bench/kernels (kernels_check, bundle_bench) and the server with the engine's GPU tests, built
#      side by side;
#   2. kernels_check --filter decode (the bundle cases run too) and compute-sanitizer on --small;
#   3. bundle_bench --context 32768 (the squeezed rows, with and without the estimate);
#   4. engine_model_tests: the kernel path's squeezed and shared-context cases;
#   5. the A/B of the default (--squeezed_bundles auto) against AB_SERVER_ARGS (default
#      --squeezed_bundles=off; scripts/gpu/server_ab.sh) with what is left.
#   OUT=... scripts/gpu/squeezed_bundles_check.sh [full_model_bench args, default
#       --shape llama2-7b --context 32768 --modes default,paper-0.9 --batches 8]
# Everything lands in $OUT/squeezed_bundles_check.tar.gz (the device tool brings back few files);
# stdout has the verdicts and tables. CHECK_SECONDS (default 580): the A/B gets what is left of it.
# Options (environment):
#   TRACE=1          bench/kernels built with -DSQZ_DECODE_TRACE=ON in its own build folders
#                    (kernels_check then checks the traced build: the same kernels plus timestamp
#                    stores that run only while a trace buffer is set), bundle_bench --trace (each
#                    layout's CTA phases: when the split's pieces start and end; printed for the
#                    own rows and the bundles of 8 in the first round, the rest in the archive);
#   a carried .ab/kernels_base.patch (scripts/gpu/kernels_ab.sh prepare <base>, here): the base's
#                    bundle_bench built beside this tree's and the two run alternately, base first;
#   ENGINE_FILTER    the engine tests' gtest filter (default the squeezed and sharing kernel-path
#                    cases; '*KernelPath*:*AttentionBackend*' runs all of them).
# The A/B's "new" is this tree with AB_SERVER_ARGS, its "base" the same tree without them: new /
# base below 1 means the flags make it faster.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
W=$(mktemp -d)
trap 'tar -czf "$OUT/squeezed_bundles_check.tar.gz" -C "$W" .' EXIT
start=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - start )) s]"; }
nvidia-smi --query-gpu=name --format=csv,noheader
( BUILD_TARGETS="squeezeserve squeezectl engine_model_tests" source scripts/gpu/build.sh \
    -DSQUEEZESERVE_BUILD_TESTS=ON -DSQUEEZESERVE_BUILD_BENCH=OFF > "$W/server_build.log" 2>&1
  echo "server build rc=$?" >> "$W/server_build.log" ) &
server=$!
trace=0; [ "${TRACE:-0}" = 1 ] && trace=1
gk=build-gk; [ $trace = 1 ] && gk=build-gk-trace  # a folder per setting: no full rebuild on a switch
kernels_build() {  # source, build dir, targets...
  cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DSQZ_DECODE_TRACE="$([ $trace = 1 ] && echo ON || echo OFF)" &&
    cmake --build "$2" -j8 --target "${@:3}"
}
base=""
if [ -f .ab/kernels_base.patch ]; then
  scripts/gpu/kernels_ab.sh unpack || exit 1
  base=$(sed -n '1s/^base //p' .ab/kernels_base.patch | cut -c1-7)
  kernels_build build-ab/kernels_base/bench/kernels "$gk-base" bundle_bench > "$W/kernels_base_build.log" 2>&1 &
  base_build=$!
fi
kernels_build bench/kernels "$gk" kernels_check bundle_bench > "$W/kernels_build.log" 2>&1 ||
  { tail -30 "$W/kernels_build.log"; exit 1; }
echo "kernels built $(elapsed)"
if [ -n "$base" ]; then
  wait $base_build || { echo "the base's bundle_bench did not build"; tail -30 "$W/kernels_base_build.log"; base=""; }
fi
timeout 150 "$gk/kernels_check" --filter decode > "$W/kernels_check_decode.txt" 2>&1
echo "kernels_check rc=$? $(elapsed): $(grep -E " PASS$" "$W/kernels_check_decode.txt" | grep -vc "ALL PASS") PASS," \
  "$(grep -cE " FAIL$|CHILD FAILED" "$W/kernels_check_decode.txt") FAIL"
grep -E "FAIL|^squeezed" "$W/kernels_check_decode.txt" | head -40
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 "$gk/kernels_check" --small --no-fork \
  > "$W/sanitizer.txt" 2>&1
echo "compute-sanitizer rc=$? $(elapsed): $(grep -E 'ERROR SUMMARY' "$W/sanitizer.txt" | tail -1)"
bench_flags=(--context 32768); [ "$trace" = 1 ] && bench_flags+=(--trace)
rounds=1; [ -n "$base" ] && rounds=2  # alternated: base, new, base, new
for round in $(seq $rounds); do
  for tree in ${base:+base} new; do
    bin=$gk/bundle_bench; [ "$tree" = base ] && bin=$gk-base/bundle_bench
    name="bundle_bench_32768_${tree}_$round"
    timeout 120 "$bin" "${bench_flags[@]}" --out "$W/$name.json" > "$W/$name.txt" 2>&1
    echo "bundle_bench $tree${base:+ (base $base)} round $round rc=$? $(elapsed)"
    if [ $trace = 1 ] && [ "$round" = 1 ]; then  # the rows that decide, each with its trace
      grep -E -A1 "own rows|bundle of 8" "$W/$name.txt" | grep -v "^--$"
    else
      grep -E "squeezed|estimate" "$W/$name.txt"
    fi
  done
done
wait $server
tail -1 "$W/server_build.log"
grep -q "rc=0" "$W/server_build.log" || { grep -E "error" -A3 "$W/server_build.log" | head -40; exit 1; }
export LD_LIBRARY_PATH="/opt/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
timeout 240 build-gpu/tests/engine/engine_model_tests \
  --gtest_filter="${ENGINE_FILTER:-*KernelPath*Squeezed*:*KernelPath*Sharing*}" > "$W/kernel_path.log" 2>&1
echo "engine tests rc=$? $(elapsed): $(grep -E '^\[  (PASSED|FAILED)  \]' "$W/kernel_path.log" | tr '\n' ' ')"
grep -E -A8 "Failure$" "$W/kernel_path.log" | head -40
left=$(( ${CHECK_SECONDS:-580} - $(date +%s) + start ))
[ $left -lt 120 ] && { echo "no time left for the A/B ($left s)"; exit 0; }
[ $# -eq 0 ] && set -- --shape llama2-7b --context 32768 --modes default,paper-0.9 --batches 8
AB_TESTS=0 ROUNDS=${ROUNDS:-1} AB_SERVER_ARGS=${AB_SERVER_ARGS:---squeezed_bundles=off} OUT="$W" timeout "$left" \
  scripts/gpu/server_ab.sh run "$@" 2>&1 | grep -v "^logs and JSON"
echo "A/B rc=${PIPESTATUS[0]} (124: cut off at $left s) done $(elapsed)"
