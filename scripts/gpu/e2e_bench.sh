#!/usr/bin/env bash
# End-to-end speed of the server on the GPU machine: TTFT and time per output token, dense vs squeezed,
# on a random-weight Llama checkpoint, through the real squeezeserve + squeezectl.
# Run from the repo root there with .gpu-deps/ carried: OUT=... scripts/gpu/e2e_bench.sh [CONTEXT_TOKENS] [LAYERS]
set -euo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
context_tokens=${1:-65536}
layers=${2:-32}
source scripts/gpu/build.sh -DSQUEEZESERVE_BUILD_TESTS=OFF -DSQUEEZESERVE_BUILD_BENCH=OFF > "$OUT/build.log" 2>&1 \
  || { grep -E "error|Error" -A3 "$OUT/build.log" | head -60; tail -20 "$OUT/build.log"; exit 1; }
export LD_LIBRARY_PATH="/opt/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
model=/tmp/llama2-7b-shape-$layers
[ -f $model/config.json ] || python3 scripts/gpu/make_random_checkpoint.py $model --layers "$layers" --shape llama2-7b
log="$OUT/server.log"
build-gpu/server/squeezeserve --model $model --device cuda --listen 127.0.0.1:0 --max_new_tokens 4096 \
  --max_query_tokens 8192 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
addr=""
for _ in $(seq 1 600); do
  addr=$(sed -n 's/^squeezeserve listening on \(.*\)$/\1/p' "$log"); [ -n "$addr" ] && break; sleep 0.5
done
ctl() { build-gpu/client/squeezectl/squeezectl --server "$addr" --timeout 1200 "$@"; }
for _ in $(seq 1 600); do ctl info >/dev/null 2>&1 && break; sleep 1; done
ctl info | head -5
python3 -c "import random; r=random.Random(0); print(','.join(str(r.randrange(3, 32000)) for _ in range($context_tokens)))" > /tmp/context_ids.txt
start=$(date +%s%N)
ctl ingest --id ctx --tokens @/tmp/context_ids.txt --json > "$OUT/ingest.json"
echo "ingest of $context_tokens tokens: $(( ($(date +%s%N) - start) / 1000000 )) ms" | tee "$OUT/ingest_time.txt"
query=$(python3 -c "import random; r=random.Random(1); print(','.join(str(r.randrange(3, 32000)) for _ in range(64)))")
results="$OUT/e2e_${context_tokens}_${layers}.jsonl"; : > "$results"
for mode in dense "squeezed --sparsity 0.7" "squeezed --sparsity 0.9" "squeezed --sparsity 0.9 --hierarchical"; do
  for rep in 1 2; do
    ctl generate --json --context ctx --tokens "$query" --max_new_tokens ${NEW_TOKENS:-128} --ignore_eos --mode $mode \
      | python3 -c "import json,sys; r=json.load(sys.stdin); print(json.dumps({'mode': '''$mode''', 'rep': $rep, 'usage': r['usage'], 'stats': r['stats']}))" \
      | tee -a "$results"
  done
done
