#!/usr/bin/env bash
# A kernel change against a base commit, in one device call: both trees' kernels_bench built side
# by side and run alternately (base, new, base, new) on the same GPU, so the comparison is a ratio
# within one run (the machine is shared and noisy); the new tree's kernels_check (AB_CHECK_FILTER's cases,
# both centroid streams) and compute-sanitizer run first.
#   here:  scripts/gpu/kernels_ab.sh prepare <base-commit>   (.ab/kernels_base.patch: base -> this tree)
#   there: scripts/gpu/kernels_ab.sh run [kernels_bench args]   (run tool: carry [".ab/kernels_base.patch"])
#          e.g. run --decode-only --context 524288 --model llama3-8b
#          scripts/gpu/kernels_ab.sh unpack   (only the base tree, to build-ab/kernels_base: for other scripts)
# The base travels as a reverse patch of kernels/ and bench/kernels/ (a few KB): the device call's
# tree, tracked files and carried paths together, is at most 64 MiB, and .gpu-deps alone is 13 MB.
# $OUT gets one archive, kernels_ab${AB_TAG}.tar.gz (logs, both runs' JSON), and the summary on
# stdout: per row the medians of each tree and new / base. AB_CHECKS=0 skips the checks (a second
# run in the same call, e.g. another --context, on trees the first run checked); AB_CHECK_FILTER
# (default decode) is kernels_check's --filter, e.g. prefill for a prefill kernel's change;
# AB_NEAREST=1 also checks and times the nearest-centroid kernels (nearest_centroid_check) of both,
# once each (~1 minute a tree). AB_ROUNDS (default 2): alternations of kernels_bench (1 where the
# call's time is short). AB_DENSE=1: then SDPA cuDNN / flash on the new tree's shapes
# (bench/kernels/sdpa_baseline.py on its first run: new_1_dense.json in the archive, the JSON that
# bench/targets.py --kernels reads, and the speedups on stdout).
set -uo pipefail
case ${1:-} in
  prepare)
    base=$(git rev-parse "${2:?base commit}") || exit 2
    # The first line names the base; the diff is from it to the working tree as it will travel.
    mkdir -p .ab && { echo "base $base"; git diff --no-color --binary "$base" -- kernels bench/kernels; } \
      > .ab/kernels_base.patch || exit 2
    untracked=$(git ls-files --others --exclude-standard kernels bench/kernels)
    [ -n "$untracked" ] && echo "warning: untracked files travel into both trees: $untracked"
    echo "base $base: .ab/kernels_base.patch ($(wc -c < .ab/kernels_base.patch) bytes)"; exit 0 ;;
  run|unpack) ;;
  *) sed -n '2,/^set /p' "$0" | grep '^#'; exit 2 ;;
esac
[ -f .ab/kernels_base.patch ] || { echo "no .ab/kernels_base.patch: run 'prepare' here and carry it"; exit 2; }
base=$(sed -n '1s/^base //p' .ab/kernels_base.patch)
rm -rf build-ab/kernels_base && mkdir -p build-ab/kernels_base/bench &&
  cp -r kernels build-ab/kernels_base/ && cp -r bench/kernels build-ab/kernels_base/bench/ &&
  (cd build-ab/kernels_base && tail -n +2 ../../.ab/kernels_base.patch | patch -s -R -E -p1 --fuzz=0) ||
  { echo "the base $base does not unpack: the tree moved since 'prepare'?"; exit 2; }
echo "base ${base:0:7} in build-ab/kernels_base"
[ "$1" = unpack ] && exit 0
shift
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
W=$(mktemp -d)
archive="$OUT/kernels_ab${AB_TAG:-}.tar.gz"
trap 'tar -czf "$archive" -C "$W" .' EXIT  # also when the call's time limit cuts the run short
build() {  # source dir, build dir, targets...
  cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null &&
    cmake --build "$2" -j"$(( $(nproc) / 2 ))" --target "${@:3}" >"$W/build_$(basename "$2").log" 2>&1
}
nearest=""; [ "${AB_NEAREST:-0}" = 1 ] && nearest=nearest_centroid_check
build bench/kernels /tmp/ab_new kernels_check kernels_bench $nearest & n=$!
build build-ab/kernels_base/bench/kernels /tmp/ab_base kernels_bench $nearest & b=$!
wait $n || { tail -30 "$W/build_ab_new.log"; exit 1; }
wait $b || { tail -30 "$W/build_ab_base.log"; exit 1; }
status=0
check=${AB_CHECK_FILTER:-decode}  # kernels_check --filter: the cases the change touches
if [ "${AB_CHECKS:-1}" = 1 ]; then
  for stream in "" --cuda-core-stream; do
    timeout 300 /tmp/ab_new/kernels_check --filter "$check" $stream >"$W/check${stream}.log" 2>&1 || status=1
    echo "kernels_check $check ${stream:-(tensor-core stream)}: $(grep -E " PASS$" "$W/check${stream}.log" |
      grep -vc "ALL PASS") passed, $(grep -cE " FAIL$|CHILD FAILED" "$W/check${stream}.log") failed"
  done
  timeout 300 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/ab_new/kernels_check --small --no-fork \
    >"$W/sanitizer.log" 2>&1 || status=1
  echo "compute-sanitizer: $(grep "ERROR SUMMARY" "$W/sanitizer.log")"
fi
if [ -n "$nearest" ]; then  # the nearest-centroid kernels: checked, then timed, base then new
  for tree in base new; do
    timeout 200 "/tmp/ab_$tree/nearest_centroid_check" >"$W/nearest_$tree.log" 2>&1 || status=1
    echo "nearest_centroid_check $tree: $(tail -1 "$W/nearest_$tree.log")"
    grep -E "^N=.* ms \(min" "$W/nearest_$tree.log" | cut -c1-60
  done
fi
rounds=${AB_ROUNDS:-2}
for i in $(seq "$rounds"); do
  for tree in base new; do
    timeout 300 "/tmp/ab_$tree/kernels_bench" "$@" --out "$W/${tree}_$i.json" >"$W/${tree}_$i.log" 2>&1 || status=1
  done
done
python3 - "$W" "$base" "$rounds" <<'PY'
import json, os, statistics, sys
w, base, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rows(tree):
    out = {}
    for i in range(1, rounds + 1):
        try:
            for r in json.load(open(os.path.join(w, f"{tree}_{i}.json")))["results"]:
                key = (r["model"], r["context"], r["batch"], r["mode"], r["query_len"], r["sparsity"], r["lookup"])
                out.setdefault(key, []).append((r["select_us"], r["attend_us"], r["total_us"]))
        except (OSError, ValueError, KeyError) as e:
            print(f"{tree} run {i}: {e}")
    return out
b, n = rows("base"), rows("new")
print(f"µs per step (selection, attention, total), medians of the alternated runs (base {base[:7]})")
print("| model | context | batch | mode | sparsity | lookup | select base / new | attend base / new "
      "| total base / new | new / base |\n|---|---:|---:|---|---:|---|---:|---:|---:|---:|")
for k in n:
    if k in b:
        mb = [statistics.median(x[i] for x in b[k]) for i in range(3)]
        mn = [statistics.median(x[i] for x in n[k]) for i in range(3)]
        print(f"| {k[0]} | {k[1] // 1024}K | {k[2]} | {k[3]} x{k[4]} | {k[5]} | {k[6]} | {mb[0]:.1f} / {mn[0]:.1f} "
              f"| {mb[1]:.1f} / {mn[1]:.1f} | {mb[2]:.1f} / {mn[2]:.1f} | {mn[2] / mb[2]:.3f} |")
PY
if [ "${AB_DENSE:-0}" = 1 ]; then  # the dense peers on the same GPU, for the targets' ratios
  timeout 300 python3 bench/kernels/sdpa_baseline.py --sparse "$W/new_1.json" --out "$W/new_1_dense.json" \
    >"$W/dense.log" 2>&1 || status=1
  tail -25 "$W/dense.log"
fi
echo "logs and JSON: $archive (written on exit)"
exit $status
