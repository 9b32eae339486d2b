#!/usr/bin/env bash
# A kernel change against a base commit, in one device call: both trees' kernels_bench built side
# by side and run alternately (base, new, base, new) on the same GPU, so the comparison is a ratio
# within one run (the machine is shared and noisy); the new tree's kernels_check (decode cases,
# both centroid streams) and compute-sanitizer run first.
#   here:  scripts/gpu/kernels_ab.sh prepare <base-commit>      (its kernels to .ab/kernels_base.tar.xz)
#   there: scripts/gpu/kernels_ab.sh run [kernels_bench args]   (run tool: carry [".ab"])
#          e.g. run --decode-only --context 524288 --model llama3-8b
# $OUT gets one archive, kernels_ab${AB_TAG}.tar.gz (logs, both runs' JSON), and the summary on
# stdout: per row the medians of each tree and new / base. AB_CHECKS=0 skips the checks (a second
# run in the same call, e.g. another --context, on trees the first run checked).
set -uo pipefail
case ${1:-} in
  prepare)
    base=$(git rev-parse "${2:?base commit}") || exit 2
    # Compressed (~150 KB): what the device call carries is at most 64 MiB (server_ab.sh).
    rm -rf .ab/base && mkdir -p .ab && git archive --prefix=kernels_base/ "$base" kernels bench/kernels |
      xz -9 > .ab/kernels_base.tar.xz && echo "$base" > .ab/KERNELS_COMMIT
    echo "base $base in .ab/kernels_base.tar.xz"; exit 0 ;;
  run) shift ;;
  *) sed -n 2,10p "$0"; exit 2 ;;
esac
[ -f .ab/KERNELS_COMMIT ] || { echo "no .ab/KERNELS_COMMIT: run 'prepare' here and carry .ab"; exit 2; }
rm -rf build-ab/kernels_base && mkdir -p build-ab && tar -xJf .ab/kernels_base.tar.xz -C build-ab || exit 2
OUT=${OUT:-$PWD/gpu-out}
W=$(mktemp -d)
build() {  # source dir, build dir, targets...
  cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null &&
    cmake --build "$2" -j"$(( $(nproc) / 2 ))" --target "${@:3}" >"$W/build_$(basename "$2").log" 2>&1
}
build bench/kernels /tmp/ab_new kernels_check kernels_bench & n=$!
build build-ab/kernels_base/bench/kernels /tmp/ab_base kernels_bench & b=$!
wait $n || { tail -30 "$W/build_ab_new.log"; exit 1; }
wait $b || { tail -30 "$W/build_ab_base.log"; exit 1; }
status=0
if [ "${AB_CHECKS:-1}" = 1 ]; then
  for stream in "" --cuda-core-stream; do
    timeout 300 /tmp/ab_new/kernels_check --filter decode $stream >"$W/check${stream}.log" 2>&1 || status=1
    echo "kernels_check decode ${stream:-(tensor-core stream)}: $(grep -c " PASS$" "$W/check${stream}.log") passed," \
      "$(grep -cE " FAIL$|SOME FAILED|CHILD FAILED" "$W/check${stream}.log") failed"
  done
  timeout 300 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/ab_new/kernels_check --small --no-fork \
    >"$W/sanitizer.log" 2>&1 || status=1
  echo "compute-sanitizer: $(grep "ERROR SUMMARY" "$W/sanitizer.log")"
fi
for i in 1 2; do
  for tree in base new; do
    timeout 300 "/tmp/ab_$tree/kernels_bench" "$@" --out "$W/${tree}_$i.json" >"$W/${tree}_$i.log" 2>&1 || status=1
  done
done
python3 - "$W" "$(cat .ab/KERNELS_COMMIT)" <<'PY'
import json, os, statistics, sys
w, base = sys.argv[1], sys.argv[2]
def rows(tree):
    out = {}
    for i in (1, 2):
        try:
            for r in json.load(open(os.path.join(w, f"{tree}_{i}.json")))["results"]:
                key = (r["model"], r["context"], r["batch"], r["mode"], r["query_len"], r["sparsity"], r["lookup"])
                out.setdefault(key, []).append(r["total_us"])
        except (OSError, ValueError, KeyError) as e:
            print(f"{tree} run {i}: {e}")
    return out
b, n = rows("base"), rows("new")
print(f"total µs per step, median of the alternated runs (base {base[:7]})")
print("| model | context | batch | mode | sparsity | lookup | base | new | new / base |\n|---|---:|---:|---|---:|---|---:|---:|---:|")
for k in n:
    if k in b:
        mb, mn = statistics.median(b[k]), statistics.median(n[k])
        print(f"| {k[0]} | {k[1] // 1024}K | {k[2]} | {k[3]} x{k[4]} | {k[5]} | {k[6]} | {mb:.1f} | {mn:.1f} | {mn / mb:.3f} |")
PY
tar -czf "$OUT/kernels_ab${AB_TAG:-}.tar.gz" -C "$W" . && echo "logs and JSON: $OUT/kernels_ab${AB_TAG:-}.tar.gz"
exit $status
