#!/usr/bin/env bash
# End-to-end speed of the server on the GPU machine: TTFT and time per output token, dense vs squeezed,
# on a random-weight Llama checkpoint, through the real squeezeserve + squeezectl; squeezed attention
# A/B'd between --attention_backend=torch (libtorch ops) and kernels (the CUDA kernels of kernels/),
# at batch 1 and 8 (8 concurrent streams: the batching scheduler steps them as one forward).
# Run from the repo root there with .gpu-deps/ carried:
#   OUT=... scripts/gpu/e2e_bench.sh [CONTEXT_TOKENS] [LAYERS]
# Environment: NEW_TOKENS (128), BACKENDS ("torch kernels"), BATCHES ("1 8"), REPS (2),
#   MODES (";"-separated squeezectl mode args; dense runs with the first backend only, it never uses
#   the squeezed backend), SKIP_BUILD=1 (build-gpu/ is already built).
# Writes $OUT/e2e_<ctx>_<layers>.jsonl (one line per stream) and $OUT/e2e_<ctx>_<layers>_summary.json
# (mean TTFT / TPOT per backend, mode and batch).
set -euo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
context_tokens=${1:-65536}
layers=${2:-32}
new_tokens=${NEW_TOKENS:-128}
backends=${BACKENDS:-torch kernels}
batches=${BATCHES:-1 8}
reps=${REPS:-2}
modes=${MODES:-dense;squeezed --sparsity 0.7;squeezed --sparsity 0.9;squeezed --sparsity 0.9 --hierarchical}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  source scripts/gpu/build.sh -DSQUEEZESERVE_BUILD_TESTS=OFF -DSQUEEZESERVE_BUILD_BENCH=OFF > "$OUT/build.log" 2>&1 \
    || { grep -E "error|Error" -A3 "$OUT/build.log" | head -60; tail -20 "$OUT/build.log"; exit 1; }
fi
export LD_LIBRARY_PATH="/opt/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
model=/tmp/llama2-7b-shape-$layers
[ -f $model/config.json ] || python3 scripts/gpu/make_random_checkpoint.py $model --layers "$layers" --shape llama2-7b
store=/tmp/e2e-store-$context_tokens-$layers; rm -rf "$store"; mkdir -p "$store"
python3 -c "import random; r=random.Random(0); print(','.join(str(r.randrange(3, 32000)) for _ in range($context_tokens)))" > /tmp/context_ids.txt
results="$OUT/e2e_${context_tokens}_${layers}.jsonl"; : > "$results"
server=""
trap '[ -n "$server" ] && kill $server 2>/dev/null || true' EXIT
trap 'exit 143' TERM INT  # a timeout still stops the server (EXIT trap)
ingested=0
for backend in $backends; do
  log="$OUT/server_$backend.log"
  # The context is ingested once (first backend) and loaded from the shared store by the others.
  # The paper's lookup unless MODES asks otherwise (--pruned estimated, --read_ahead on): the kernels'
  # fastest path, comparable with earlier runs.
  build-gpu/server/squeezeserve --model $model --device cuda --default_pruned dropped --default_read_ahead off --attention_backend "$backend" --store "$store" \
    --listen 127.0.0.1:0 --max_new_tokens 4096 --max_query_tokens 8192 >"$log" 2>&1 &
  server=$!
  addr=""
  for _ in $(seq 1 600); do
    addr=$(sed -n 's/^squeezeserve listening on \(.*\)$/\1/p' "$log"); [ -n "$addr" ] && break; sleep 0.5
  done
  ctl() { build-gpu/client/squeezectl/squeezectl --server "$addr" --timeout 1200 "$@"; }
  for _ in $(seq 1 600); do ctl info >/dev/null 2>&1 && break; sleep 1; done
  grep -m1 "squeezed attention on" "$log" || true
  if [ $ingested = 0 ]; then
    start=$(date +%s%N)
    ctl ingest --id ctx --tokens @/tmp/context_ids.txt --json > "$OUT/ingest.json"
    echo "ingest of $context_tokens tokens: $(( ($(date +%s%N) - start) / 1000000 )) ms" | tee "$OUT/ingest_time.txt"
    ingested=1
  fi
  IFS=';' read -r -a mode_list <<< "$modes"
  for mode in "${mode_list[@]}"; do
    # Dense generation never uses the backend: measured with the first one only.
    [ "${mode%% *}" = dense ] && [ "$backend" != "${backends%% *}" ] && continue
    for batch in $batches; do
      for rep in $(seq 1 "$reps"); do
        pids=()
        for stream in $(seq 1 "$batch"); do
          query=$(python3 -c "import random; r=random.Random($stream); print(','.join(str(r.randrange(3, 32000)) for _ in range(64)))")
          ( ctl generate --json --context ctx --tokens "$query" --max_new_tokens "$new_tokens" --ignore_eos --mode $mode \
              | python3 -c "import json,sys; r=json.load(sys.stdin); print(json.dumps({'backend': '$backend', 'mode': '''$mode''', 'batch': $batch, 'rep': $rep, 'stream': $stream, 'usage': r['usage'], 'stats': r['stats']}))" \
              >> "$results" ) &
          pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p" || echo "a stream failed: backend $backend, mode $mode, batch $batch" >&2; done
      done
    done
  done
  kill $server; wait $server 2>/dev/null || true; server=""
done
python3 - "$results" > "$OUT/e2e_${context_tokens}_${layers}_summary.json" <<'EOF'
import collections, json, sys
# Concurrent streams append to one file: a line may hold two records when their writes interleave.
decoder, rows = json.JSONDecoder(), []
for line in open(sys.argv[1]):
    at = 0
    while line[at:].strip():
        record, at = decoder.raw_decode(line, at + (len(line[at:]) - len(line[at:].lstrip())))
        rows.append(record)
groups = collections.OrderedDict()
for r in rows:
    # rep 1 warms up (first use of a shape, allocator growth) when there are several reps.
    groups.setdefault((r['backend'], r['mode'], r['batch']), []).append(r)
out = []
for (backend, mode, batch), rs in groups.items():
    reps = {r['rep'] for r in rs}
    kept = [r for r in rs if r['rep'] != 1] if len(reps) > 1 else rs
    mean = lambda k: sum(float(r['usage'].get(k, 0)) for r in kept) / len(kept)
    out.append({'backend': backend, 'mode': mode, 'batch': batch, 'streams': len(kept),
                'ttft_ms': round(mean('time_to_first_token_ms'), 3), 'tpot_ms': round(mean('time_per_output_token_ms'), 3),
                'kv_fraction_loaded': round(sum(float(r['stats'].get('kv_fraction_loaded', 1)) for r in kept) / len(kept), 4)})
print(json.dumps(out, indent=1))
for o in out:
    print(f"{o['backend']:8s} {o['mode']:40s} batch {o['batch']}: ttft {o['ttft_ms']:9.2f} ms  tpot {o['tpot_ms']:8.2f} ms  kv {o['kv_fraction_loaded']}", file=sys.stderr)
EOF
