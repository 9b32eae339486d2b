#!/usr/bin/env bash
# Builds squeezeserve and runs it end to end on the tiny shipped model (CPU): start the server, ingest a
# document, ask a question, watch the answer stream, stop the server.
# Usage: scripts/quickstart.sh [MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/reference/llama-gqa-llama3rope-tied}
scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target squeezeserve squeezectl

log=$(mktemp)
build/server/squeezeserve --model "$model" --listen 127.0.0.1:0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  addr=$(sed -n 's/^squeezeserve listening on \(.*\)$/\1/p' "$log")
  [ -n "$addr" ] && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.2
done
[ -n "$addr" ] || { echo "server did not start"; cat "$log"; exit 1; }
ctl() { build/client/squeezectl/squeezectl --server "$addr" "$@"; }

echo "== server on $addr"
ctl info
echo "== ingest models/tokenizer/README.md as context 'tokenizer-readme'"
ctl ingest --file models/tokenizer/README.md --id tokenizer-readme
echo "== generate (streamed)"
ctl generate --context tokenizer-readme --prompt "Question: how was the tokenizer trained? Answer:" --max_new_tokens 48
echo
echo "== contexts"
ctl list
