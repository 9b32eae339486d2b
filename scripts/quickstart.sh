#!/usr/bin/env bash
# Builds squeezeserve and runs it end to end on the small trained model the repo ships (models/small;
# CPU when there is no GPU): start the server, ingest a document, ask questions whose answers sit deep in
# it (dense, then Squeezed Attention at 90% sparsity), stream a continuation, stop the server.
# Usage: scripts/quickstart.sh [--no-build] [MODEL_DIR]   (the questions below suit models/small)
#   --no-build: use the binaries already in $SQUEEZESERVE_BUILD_DIR (default build/); the test suite
#   runs the demo this way (ctest quickstart_demo).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SQUEEZESERVE_BUILD_DIR:-build}
if [ "${1:-}" = "--no-build" ]; then
  shift
else
  scripts/install_deps.sh
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j "$(nproc)" --target squeezeserve squeezectl
fi
model=${1:-models/small}

log=$(mktemp)
"$build/server/squeezeserve" --model "$model" --listen 127.0.0.1:0 --openai_listen 127.0.0.1:0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  addr=$(sed -n 's/^squeezeserve listening on \(.*\)$/\1/p' "$log")
  [ -n "$addr" ] && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.2
done
[ -n "$addr" ] || { echo "server did not start"; cat "$log"; exit 1; }
ctl() { "$build/client/squeezectl/squeezectl" --server "$addr" "$@"; }
# It listens before the model is loaded (RPCs answer UNAVAILABLE until then): wait for it.
for _ in $(seq 1 300); do ctl info >/dev/null 2>&1 && break; kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }; sleep 0.2; done

echo "== server on $addr"
ctl info
doc=models/small/demo_document.txt
echo "== ingest $doc (docs/operations.md with three vault pass keys planted in it) as context 'ops-manual'"
ctl ingest --file "$doc" --id ops-manual
question=$'\nWhat is the pass key for vault Lyra? The pass key for vault Lyra is'
echo "== ask for a pass key, dense attention (the document says 90577)"
ctl generate --context ops-manual --prompt "$question" --max_new_tokens 6 --mode dense
echo "== the same, Squeezed Attention at 90% sparsity, hierarchical lookup"
ctl generate --context ops-manual --prompt "$question" --max_new_tokens 6 --mode squeezed --sparsity 0.9 --hierarchical
echo "== free text after the document, sampled (a 16M-parameter model: fluent-looking, not wise)"
ctl generate --context ops-manual --prompt $'\n## Summary\n\nThis document explains how to' --max_new_tokens 48 \
  --temperature 0.7 --top_p 0.9 --seed 3
echo
echo "== the OpenAI-compatible API on the same server: a chat (no stored context; the model's chat template)"
openai=$(sed -n 's/^squeezeserve openai on \(.*\)$/\1/p' "$log")
python3 - "$openai" <<'EOF'
import json, sys, urllib.error, urllib.request
def post(path, body):
    request = urllib.request.Request(f"http://{sys.argv[1]}/v1/{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=120))
try:
    chat = post("chat/completions", {"messages": [{"role": "user", "content": "What is a vault?"}],
                                     "max_tokens": 24, "temperature": 0})
    print(chat["choices"][0]["message"]["content"])
    print("usage:", chat["usage"])
except urllib.error.HTTPError as error:  # e.g. a checkpoint without a chat template
    print(error.code, error.read().decode())
EOF
echo "== contexts"
ctl list
