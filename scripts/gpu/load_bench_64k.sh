#!/usr/bin/env bash
# squeezeload on the GPU machine against one 64K-token fixed context, dense vs squeezed (90%): a
# Llama-2-7B-shaped random checkpoint with 4 layers (random weights time like real ones; 4 layers keep
# the ingest short), 64-token queries, 32 output tokens, closed loop at 1 and 8 streams, 8 s per level.
# The context is ingested once by the dense pass; the squeezed pass reuses it (--skip_ingest).
# Run from the repo root there after a GPU build (scripts/gpu/build.sh, .gpu-deps carried):
#   OUT=... scripts/gpu/load_bench_64k.sh
set -euo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
export LD_LIBRARY_PATH="/opt/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
model=/tmp/llama2-7b-shape-4
[ -f $model/config.json ] || python3 scripts/gpu/make_random_checkpoint.py $model --layers 4 --shape llama2-7b
build-gpu/server/squeezeserve --model $model --device cuda --default_pruned dropped --default_read_ahead off --listen 127.0.0.1:50990 --max_concurrent_streams 16 \
  --max_query_tokens 8192 --log_level warn > "$OUT/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do build-gpu/client/squeezectl/squeezectl --server 127.0.0.1:50990 info >/dev/null 2>&1 && break; sleep 0.5; done
load=build-gpu/client/squeezeload/squeezeload
$load --server 127.0.0.1:50990 --workload bench/results/gpu_load_64k_dense_workload.json --sweep 1,8 --duration 8 \
  --warmup_requests 2 --json_out "$OUT/gpu_load_64k_dense.json"
$load --server 127.0.0.1:50990 --workload bench/results/gpu_load_64k_squeezed_workload.json --skip_ingest --sweep 1,8 \
  --duration 8 --warmup_requests 2 --json_out "$OUT/gpu_load_64k_squeezed.json"
