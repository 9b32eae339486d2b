#!/usr/bin/env bash
# A whole-model change against a base commit, in one device call: both trees' servers built (the
# base from `git archive` of its commit), the new tree's engine GPU tests, then
# scripts/gpu/full_model_bench.py (the new tree's, for both) run alternately (base, new, base, new)
# on the same GPU, so the comparison is a ratio within one run: whole-model figures differ by ~10%
# between H100s (docs/performance.md, run 25), and a change of a few percent is only seen this way.
#   here:  scripts/gpu/server_ab.sh prepare <base-commit>    (exports it to .ab/server_base.tar.xz)
#   there: scripts/gpu/server_ab.sh run [full_model_bench args]
#          (run tool: carry [".gpu-deps", ".ab"]; the tracked tree and .gpu-deps leave under 2 MB of
#          the 64 MiB, so .ab holds compressed trees only; on 2026-12-07 the server's base (0.37 MB)
#          and a kernels base together were refused as too large: kernels_ab.sh's base is now a
#          patch, carried alone as .ab/kernels_base.patch)
#          e.g. run --shape llama3-8b --context 33000 --modes dense,paper-0.9 --batches 1,8
# The bench gets --new_tokens 32 --reps 3 --no_store unless the arguments say otherwise. ROUNDS
# (default 2): base/new pairs; AB_TESTS=0 skips the engine GPU tests (where the call ran them).
# AB_SERVER_ARGS="--flag ..." instead compares the new tree with and without those server flags
# (one build, no base commit, no .ab), e.g. AB_SERVER_ARGS=--squeezed_bundles=off.
# Both builds stay in the machine's ignored build folders (build-gpu/, build-ab/: a warm machine
# keeps them between calls), so a call of AB_BUILD_ONLY=1 (both trees built, ~4-5 min) and a `run`
# right after it (builds up to date, ~1 min a bench) split what one 600 s call cannot hold.
# $OUT gets server_ab.tar.gz (logs, every run's JSON) and stdout the summary
# (scripts/gpu/server_ab_summary.py: TPOT / TTFT medians per mode and batch, new / base).
set -uo pipefail
case ${1:-} in
  prepare)
    base=$(git rev-parse "${2:?base commit}") || exit 2
    # What building the server reads (not the models, tests and results), compressed: `run` carries
    # at most 64 MiB, and the tracked tree with .gpu-deps leaves under 2 MB of it.
    rm -f .ab/server_base.tar.xz .ab/COMMIT && mkdir -p .ab &&
      git archive --prefix=server_base/ "$base" CMakeLists.txt Dockerfile proto kernels engine server client scripts |
      xz -9 > .ab/server_base.tar.xz && echo "$base" > .ab/COMMIT
    echo "base $base in .ab/server_base.tar.xz ($(du -h .ab/server_base.tar.xz | cut -f1))"; exit 0 ;;
  run) shift ;;
  *) sed -n 2,13p "$0"; exit 2 ;;
esac
flags=${AB_SERVER_ARGS:-}
if [ -n "$flags" ]; then
  base_label="this tree without $flags"
else
  [ -f .ab/COMMIT ] || { echo "no .ab/COMMIT: run 'prepare' here and carry .ab"; exit 2; }
  base_label=$(cat .ab/COMMIT)
fi
# The base tree outside .ab (which each call's carry replaces), re-extracted only for another commit,
# so that its build folder survives to the next call on a warm machine.
base_tree=build-ab/server_base
if [ -z "$flags" ] && [ "$(cat build-ab/COMMIT 2>/dev/null)" != "$(cat .ab/COMMIT)" ]; then
  rm -rf build-ab && mkdir -p build-ab && tar -xJf .ab/server_base.tar.xz -C build-ab && cp .ab/COMMIT build-ab/COMMIT || exit 2
fi
[ -d .gpu-deps ] || { echo "no .gpu-deps: run scripts/gpu/fetch_deps.sh here and carry it"; exit 2; }
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
W=$(mktemp -d)
trap 'tar -czf "$OUT/server_ab.tar.gz" -C "$W" --exclude "bin_*" . && echo "logs and JSON: $OUT/server_ab.tar.gz"' EXIT
# Each tree's server and client into $W/bin_<tree> (full_model_bench.py's SQUEEZESERVE_BIN).
install_bin() {  # tree root, tree name
  mkdir -p "$W/bin_$2" && cp "$1/build-gpu/server/squeezeserve" "$1/build-gpu/client/squeezectl/squeezectl" "$W/bin_$2/"
}
( BUILD_TARGETS="squeezeserve squeezectl engine_model_tests" source scripts/gpu/build.sh \
    -DSQUEEZESERVE_BUILD_TESTS=ON -DSQUEEZESERVE_BUILD_BENCH=OFF ) >"$W/build_new.log" 2>&1 \
  || { tail -30 "$W/build_new.log"; exit 1; }
install_bin . new || exit 1
if [ -n "$flags" ]; then
  install_bin . base || exit 1
else
  ( cd "$base_tree" && ln -sfn "$PWD/../../.gpu-deps" .gpu-deps &&
    BUILD_TARGETS="squeezeserve squeezectl" source scripts/gpu/build.sh \
      -DSQUEEZESERVE_BUILD_TESTS=OFF -DSQUEEZESERVE_BUILD_BENCH=OFF ) >"$W/build_base.log" 2>&1 \
    || { tail -30 "$W/build_base.log"; exit 1; }
  install_bin "$base_tree" base || exit 1
fi
[ "${AB_BUILD_ONLY:-0}" = 1 ] && { echo "built: new and base ($base_label)"; exit 0; }
export LD_LIBRARY_PATH="/opt/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
status=0
if [ "${AB_TESTS:-1}" = 1 ]; then
  timeout 300 build-gpu/tests/engine/engine_model_tests --gtest_filter='*FusedOps*:*KernelPath*:JoinRows*' \
    >"$W/tests.log" 2>&1 || status=1
  echo "engine GPU tests (new tree): $(grep -E '^\[  (PASSED|FAILED)  \]' "$W/tests.log" | tr '\n' ' ')"
fi
for i in $(seq 1 "${ROUNDS:-2}"); do
  for tree in base new; do
    extra=(); [ "$tree" = new ] && [ -n "$flags" ] && extra=("--server_args=$flags")
    SQUEEZESERVE_BIN="$W/bin_$tree" timeout 900 python3 scripts/gpu/full_model_bench.py \
      --new_tokens 32 --reps 3 --no_store "$@" "${extra[@]}" --out "$W/${tree}_$i" >"$W/${tree}_$i.log" 2>&1 || status=1
  done
done
python3 scripts/gpu/server_ab_summary.py "$W" "$base_label"
exit $status
