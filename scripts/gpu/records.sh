#!/usr/bin/env bash
# The whole-model runs of record (bench/targets.py reads them: bench/results/full_<shape>_<context>_h200.json),
# remade on the GPU machine from this tree: the server built (scripts/gpu/build.sh), the random
# checkpoints made once, then scripts/gpu/full_model_bench.py once per SHAPE:CONTEXT argument, each
# with the modes the targets compare (dense, the default and the paper's lookup; above 128K, as in
# the earlier records, the default and the paper's lookup only: the squeezed targets), batch 1 and 8.
#   scripts/gpu/records.sh llama3-8b:33000 llama2-7b:32768 llama3-8b:131072 ...
# (run tool: carry [".gpu-deps"]; a 512K run takes ~5 minutes, a 32K one under one.) $OUT gets the
# JSON and each run's log; stdout the tables. MODES overrides the modes; BENCH_ARGS adds arguments;
# RECORD_COMMIT (the tree's commit: the GPU machine's copy may have no git history) goes with the command
# into each JSON's run field.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
( BUILD_TARGETS="squeezeserve squeezectl" source scripts/gpu/build.sh \
    -DSQUEEZESERVE_BUILD_TESTS=OFF -DSQUEEZESERVE_BUILD_BENCH=OFF ) >"$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log"; exit 1; }
export LD_LIBRARY_PATH="/opt/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
status=0
for run in "$@"; do
  shape=${run%%:*} context=${run#*:}
  modes=${MODES:-$([ "$context" -gt 131072 ] && echo default,paper-0.9 || echo dense,default,paper-0.9)}
  start=$(date +%s)
  timeout 580 python3 scripts/gpu/full_model_bench.py --shape "$shape" --context "$context" --modes "$modes" \
    --batches 1,8 --no_store ${BENCH_ARGS:-} --out "$OUT" \
    --run "engine ${RECORD_COMMIT:-unknown}: scripts/gpu/records.sh $*" >"$OUT/${shape}_${context}.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] || status=1
  echo "## $shape $context ($modes): $(( $(date +%s) - start )) s, exit $rc"
  grep -E '^\|' "$OUT/${shape}_${context}.log" | tail -8
done
exit $status
