#!/usr/bin/env bash
# On the GPU machine, from the repo root, after scripts/gpu/build.sh: Nsight Compute on one kind of
# the server's steps, each kernel timed alone with caches flushed, then the time by group
# (scripts/gpu/decode_graph_profile.py): the whole model's step, kernel by kernel, where end to end
# only the total is known (docs/performance.md).
#   --step decode (default): the nodes of the replayed decode graphs of one batch size (the range
#     "decode_graph_B<n>" that engine/decode_graphs.cc opens around each replay); one replay is kept.
#   --step eager_decode: the same steps with the graphs off (--cuda_graphs=false), each dispatched
#     op by op under the range "eager_decode_B<n>".
#   --step prefill: the eager steps that feed the questions' tokens (the range "query_prefill_B<k>",
#     k <= n, engine/decode_graphs.h EagerStepRange): what the time to first token holds. Every such
#     step of the run is summed: the warm-up's questions and the measured ones' (two rounds).
#   --timeline (decode only): instead, the step as it runs: scripts/gpu/cupti_trace.cc (a CUPTI
#     injection library: the machine has no Nsight Systems) records two replays and what lies
#     between them, and scripts/gpu/step_timeline.py charges each kernel and copy the time it adds
#     to the step, the GPU's idle time and the host's CUDA calls: what the step pays, where the
#     default gives what each kernel costs alone.
#   scripts/gpu/profile_decode_graph.sh [--shape llama3-8b] [--context 32768] [--batch 8] [--mode default]
#                                       [--step decode|eager_decode|prefill] [--timeline]
# SERVER_ARGS (environment): more squeezeserve flags for the profiled server, e.g.
# SERVER_ARGS=--squeezed_bundles=off.
# Leaves in $OUT (default ./gpu-out): ncu_decode_graph.csv, decode_graph_profile.{txt,json}; with
# --timeline step_timeline.{csv,txt,json}.
# The end-to-end figures of this run are the profiler's (every kernel serialised): not results.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
SHAPE=llama3-8b CONTEXT=32768 BATCH=8 MODE=default STEP=decode SERVER_ARGS=${SERVER_ARGS:-} TIMELINE=0
while [ $# -gt 0 ]; do
  case $1 in
    --shape) SHAPE=$2; shift 2 ;; --context) CONTEXT=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;; --mode) MODE=$2; shift 2 ;;
    --step) STEP=$2; shift 2 ;;
    --timeline) TIMELINE=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
NCU=${NCU:-$(command -v ncu || echo /opt/nvidia/nsight-compute/ncu)}
# The server runs the named steps between cudaProfilerStart and cudaProfilerStop
# (SQUEEZESERVE_PROFILE_RANGE, a prefix of their NVTX range's name: engine/decode_graphs.cc), and
# Nsight Compute profiles only there (--profile-from-start off): not the ingest before them.
case $STEP in
  # Two replays' nodes (~20 kernels a layer): decode_graph_profile.py keeps the first.
  decode) RANGE="decode_graph_B$BATCH" NODES="--graph-profiling node" COUNT=2000 SUMMARY="" ;;
  eager_decode) RANGE="eager_decode_B$BATCH" NODES="" COUNT=2000 SUMMARY="" SERVER_ARGS="$SERVER_ARGS --cuda_graphs=false" ;;
  # A query prefill step of k questions, k up to the batch (they may arrive over several steps).
  prefill) RANGE="query_prefill_B" NODES="" COUNT=6000 SUMMARY="--all --rounds 2" ;;
  *) echo "--step is decode, eager_decode or prefill" >&2; exit 2 ;;
esac
export SQUEEZESERVE_PROFILE_RANGE=$RANGE
# The server's run that the profiler watches (set up by the environment before the call).
profiled_run() {
  python3 scripts/gpu/full_model_bench.py --shape "$SHAPE" --context "$CONTEXT" --modes "$MODE" \
    --batches "$BATCH" --new_tokens 8 --reps 1 --no_store --out "$OUT" --server_args="$SERVER_ARGS" >"$OUT/profile_run.log" 2>&1 \
    || { tail -20 "$OUT/profile_run.log"; exit 1; }
}
if [ "$TIMELINE" = 1 ]; then
  # CUPTI's header and library: the toolkit's, else the pip wheel's that PyTorch loads.
  find_one() { find /usr/local/cuda* /usr/lib/python3* /usr/local/lib/python3* -name "$1" 2>/dev/null | head -1; }
  HEADER=$(find_one cupti.h) LIB=$(find_one 'libcupti.so*')
  [ -n "$HEADER" ] && [ -n "$LIB" ] || { echo "no CUPTI (cupti.h, libcupti.so) found" >&2; exit 2; }
  CUDA_INC=$(dirname "$(find_one cuda.h)")
  g++ -std=c++17 -O2 -shared -fPIC -I"$(dirname "$HEADER")" ${CUDA_INC:+-I"$CUDA_INC"} scripts/gpu/cupti_trace.cc \
    "$LIB" -Wl,-rpath,"$(dirname "$LIB")" -o "$OUT/libsqz_cupti_trace.so" || exit 1
  rm -f "$OUT"/trace.*.csv
  CUDA_INJECTION64_PATH="$OUT/libsqz_cupti_trace.so" SQZ_TRACE_OUT="$OUT/trace" SQZ_TRACE_WINDOWS=2 profiled_run
  TRACE=$(ls -S "$OUT"/trace.*.csv 2>/dev/null | head -1)  # the server's (other processes trace nothing)
  [ -n "$TRACE" ] || { echo "no trace written (see $OUT/profile_run.log)" >&2; exit 1; }
  mv "$TRACE" "$OUT/step_timeline.csv" && rm -f "$OUT"/trace.*.csv "$OUT/libsqz_cupti_trace.so"
  python3 scripts/gpu/step_timeline.py "$OUT/step_timeline.csv" --json "$OUT/step_timeline.json" | tee "$OUT/step_timeline.txt"
  exit "${PIPESTATUS[0]}"
fi
export SQUEEZESERVE_SERVER_WRAPPER="$NCU --clock-control none --profile-from-start off $NODES \
  --launch-count $COUNT --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv --log-file $OUT/ncu_decode_graph.csv"
profiled_run
python3 scripts/gpu/decode_graph_profile.py "$OUT/ncu_decode_graph.csv" $SUMMARY --json "$OUT/decode_graph_profile.json" \
  | tee "$OUT/decode_graph_profile.txt"
