#!/usr/bin/env bash
# Long-context accuracy of the shipped small model on the GPU machine (issue 7; bench/eval_long_context):
# builds, makes the task file from the held-out corpus shipped in bench/eval_long_context/heldout/
# serves models/small on CUDA and runs longctx_eval over every configuration.
# Run from the repo root there with .gpu-deps/ carried:
#   OUT=... [MODEL=models/small] [EVAL_LENGTHS=16384,32768] [TASK_LENGTHS=4K,8K,16K,32K] \
#     [CONTEXTS=2] [QUERIES=24] [CONCURRENCY=16] [END_BY_S=300] [CONFIGS=all] [FLOOR_SHARES=0] \
#     [TASKS_ONLY=kv_retrieval,passkey] [SEED=0] [SERVER_ARGS="--default_pruned estimated"] \
#     scripts/gpu/eval_long_context.sh
# SERVER_ARGS: more squeezeserve flags (e.g. the defaults a flatNN configuration gets).
# SEED: make_tasks.py --seed (another seed = another held-out draw of the same kind of tasks).
# TASKS_ONLY: evaluate only these tasks (function_copy's long outputs dominate the time: the small
# model's group of 3 query heads per KV head is not a kernel shape, so squeezed decode runs on libtorch).
# FLOOR_SHARES: one evaluation per value of longctx_eval --head_floor_share (0 = the server's default,
# negative = no per-head floor), e.g. "0 -1" compares the default with the paper's global thresholds;
# END_BY_S is split evenly between them.
# END_BY_S: longctx_eval starts no new context once the script has run that long; a context already
# started runs to its end (9 configurations x every query: minutes at 32K), and the device tool's calls end
# at 600 s — on 2026-11-23 a call with all four lengths and END_BY_S=540 was cut at 600 s and returned
# nothing. So: one length per call, the default 300 s, and results are written only at the end; the JSON says how
# many contexts were left out ("contexts_left_out_for_time"): run again with EVAL_LENGTHS set to the rest.
# Leaves in $OUT (6 files): tasks_longctx.jsonl (every TASK_LENGTHS, so the CPU run here can use the
# same held-out tasks), longctx_<lengths>.json (results), longctx_<lengths>_outputs.jsonl (every
# generation), eval.log (tables), server.log, build.log.
set -euo pipefail
t0=$(date +%s)
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
model=${MODEL:-models/small}
eval_lengths=${EVAL_LENGTHS:-16384,32768}
task_lengths=${TASK_LENGTHS:-4K,8K,16K,32K}
contexts=${CONTEXTS:-2}
queries=${QUERIES:-24}
concurrency=${CONCURRENCY:-16}
end_by=${END_BY_S:-300}
configs=${CONFIGS:-all}
floor_shares=${FLOOR_SHARES:-0}
[ -f "$model/config.json" ] || { echo "no checkpoint in $model (config.json missing)"; exit 1; }

# The tasks (one CPU core, ~30 s) are made while the project builds.
export PYTHONUNBUFFERED=1
python3 bench/eval_long_context/make_tasks.py --out "$OUT/tasks_longctx.jsonl" --lengths "$task_lengths" \
  --contexts_per_task "$contexts" --queries "$queries" --tokenizer "$model/tokenizer.model" --seed "${SEED:-0}" \
  > /tmp/make_tasks.log 2>&1 &
tasks=$!
# BENCH=ON explicitly: kernel_path_check.sh caches it OFF in build-gpu/.
BUILD_TARGETS="squeezeserve squeezectl longctx_eval" source scripts/gpu/build.sh -DSQUEEZESERVE_BUILD_TESTS=OFF -DSQUEEZESERVE_BUILD_BENCH=ON \
  > "$OUT/build.log" 2>&1 \
  || { grep -E "error|Error" -A3 "$OUT/build.log" | head -60; tail -20 "$OUT/build.log"; exit 1; }
wait $tasks || { cat /tmp/make_tasks.log; echo "make_tasks.py failed"; exit 1; }
tail -n 20 /tmp/make_tasks.log
eval_tasks="$OUT/tasks_longctx.jsonl"
if [ -n "${TASKS_ONLY:-}" ]; then
  eval_tasks=/tmp/tasks_eval.jsonl
  python3 -c 'import json, sys
keep = set(sys.argv[1].split(","))
for line in open(sys.argv[2]):
    if json.loads(line)["task"] in keep: sys.stdout.write(line)' "$TASKS_ONLY" "$OUT/tasks_longctx.jsonl" > "$eval_tasks"
fi
export LD_LIBRARY_PATH="/opt/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"

log="$OUT/server.log"
build-gpu/server/squeezeserve --model "$model" --device cuda --listen 127.0.0.1:0 \
  --max_concurrent_streams "$concurrency" ${SERVER_ARGS:-} >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
addr=""
for _ in $(seq 1 600); do
  addr=$(sed -n 's/^squeezeserve listening on \(.*\)$/\1/p' "$log"); [ -n "$addr" ] && break; sleep 0.5
done
[ -n "$addr" ] || { echo "the server did not start"; tail -20 "$log"; exit 1; }
# It listens before the model is loaded (health NOT_SERVING, RPCs UNAVAILABLE): wait for it.
for _ in $(seq 1 600); do build-gpu/client/squeezectl/squeezectl --server "$addr" info >/dev/null 2>&1 && break; sleep 0.5; done
name="longctx_$(echo "$eval_lengths" | tr ',' '_')"
set -- $floor_shares
total_runs=$#
runs=$#
set +e
status=0
for share in $floor_shares; do
  suffix=""; [ "$total_runs" -gt 1 ] && suffix="_floor${share}"
  budget=$(( (end_by - ($(date +%s) - t0)) / runs )); [ "$budget" -ge 30 ] || budget=30
  runs=$(( runs - 1 )); [ "$runs" -ge 1 ] || runs=1
  echo "head_floor_share ${share}: evaluation budget ${budget} s ($(( $(date +%s) - t0 )) s so far)"
  build-gpu/bench/eval_long_context/longctx_eval --server "$addr" --tasks "$eval_tasks" \
    --lengths "$eval_lengths" --configs "$configs" --head_floor_share "$share" --concurrency "$concurrency" \
    --timeout 1200 --time_budget_s "$budget" \
    --out "$OUT/$name$suffix.json" --outputs "$OUT/${name}${suffix}_outputs.jsonl" 2>&1 | tee -a "$OUT/eval.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
set -e
echo "longctx_eval exit status: $status"
exit "$status"
