#!/usr/bin/env bash
# Throughput and p50/p99 latency at 1, 8 and 32 concurrent streams on the GPU machine: the real server
# (batching scheduler) on CUDA with the tiny reference model, driven by squeezeload with the same workload
# as the CPU run (bench/results/cpu_load_workload.json). Run from the repo root there, .gpu-deps/ carried:
#   OUT=... scripts/gpu/load_bench.sh [DURATION_S]
set -euo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
duration=${1:-10}
source scripts/gpu/build.sh -DSQUEEZESERVE_BUILD_TESTS=OFF -DSQUEEZESERVE_BUILD_BENCH=OFF > "$OUT/build.log" 2>&1 \
  || { grep -E "error|Error" -A3 "$OUT/build.log" | head -60; exit 1; }
log="$OUT/server.log"
build-gpu/server/squeezeserve --model models/reference/llama-gqa-llama3rope-tied --device cuda --default_pruned dropped --default_read_ahead off \
  --listen 127.0.0.1:50987 --max_concurrent_streams=32 --max_queued_requests=64 --log_level=warn >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  build-gpu/client/squeezectl/squeezectl --server 127.0.0.1:50987 info >/dev/null 2>&1 && break; sleep 0.5
done
build-gpu/client/squeezeload/squeezeload --server 127.0.0.1:50987 --workload bench/results/cpu_load_workload.json \
  --sweep 1,8,32 --duration "$duration" --warmup_requests 4 --json_out "$OUT/gpu_load_batching.json" 2>&1 | tail -30
