#!/usr/bin/env python3
"""The full-size benchmark (docs/performance.md): a whole random-weight Llama model through the real
server on the GPU machine, every figure next to its physical limit measured in the same run and next
to HF transformers (SDPA) on the same checkpoint.

For one model shape and one context length it measures
  - the limits: device-to-device copy bandwidth (bytes read + written per second) and the bf16 matmul
    rate (8192^3), each the median of 10 runs;
  - ingest through squeezeserve: wall time and its stages (prefill / clustering / calibrating from the
    engine's log line, store = the rest), peak device memory; prefill FLOPs / matmul rate = its limit;
  - TTFT and time per output token (TPOT) per attention mode and batch size (B concurrent streams on
    the same context), with the bytes one decode step must read (bench/step_bytes.py: the weights,
    the shared context's KV the streams read, at most once, their own tokens and the centroids
    scored) / the copy bandwidth = the TPOT's limit, and the questions' prefill (64 tokens, or
    --question_tokens: those bytes / copy rate or its FLOPs / matmul rate, the larger) = the TTFT's;
  - HF transformers with SDPA on the same checkpoint (with --hf): prefill time and TPOT at batch 1.
Writes OUT/full_<shape>_<context>.json and prints a markdown table.

  python3 scripts/gpu/full_model_bench.py --shape llama3-8b --context 32768 --out $OUT [--hf] [--batches 1,8]
Needs build-gpu/ (scripts/gpu/build.sh) and the .deb libraries it unpacked (LD_LIBRARY_PATH).
"""
import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from step_bytes import SHAPES, decode_step_bytes, weight_bytes  # noqa: E402
# SQUEEZESERVE_BIN: a folder holding squeezeserve and squeezectl built earlier (else build-gpu/).
BIN = os.environ.get("SQUEEZESERVE_BIN")
SERVER = os.path.join(BIN, "squeezeserve") if BIN else os.path.join(ROOT, "build-gpu/server/squeezeserve")
CTL = os.path.join(BIN, "squeezectl") if BIN else os.path.join(ROOT, "build-gpu/client/squeezectl/squeezectl")
# SQUEEZESERVE_SERVER_WRAPPER: a command the server runs under, e.g. Nsight Compute
# (scripts/gpu/profile_decode_graph.sh); its timings are then the profiler's, not results.
WRAPPER = os.environ.get("SQUEEZESERVE_SERVER_WRAPPER", "").split()
# The libraries scripts/gpu/build.sh unpacked: its LD_LIBRARY_PATH export reaches only the shell that
# sourced it (a build in a background subshell left the server unable to start), so set it here.
DEPS_LIB = "/opt/deps/usr/lib/x86_64-linux-gnu"
if os.path.isdir(DEPS_LIB) and DEPS_LIB not in os.environ.get("LD_LIBRARY_PATH", ""):
    os.environ["LD_LIBRARY_PATH"] = DEPS_LIB + ":" + os.environ.get("LD_LIBRARY_PATH", "")

# name -> squeezectl generate arguments. "default" sends no attention option: the server's defaults
# (which look up through both index levels from --two_level_min_context_tokens on); the named
# squeezed modes pin their levels (one, as before that rule; hier-*: two).
ONE = ["--lookup_levels", "one"]
MODES = {
    "dense": ["--mode", "dense"],
    "default": [],
    "squeezed-0.7": ["--mode", "squeezed", "--sparsity", "0.7"] + ONE,
    "squeezed-0.9": ["--mode", "squeezed", "--sparsity", "0.9"] + ONE,
    "paper-0.9": ["--mode", "squeezed", "--sparsity", "0.9", "--pruned", "dropped", "--read_ahead", "off"] + ONE,
    "estimated-0.9": ["--mode", "squeezed", "--sparsity", "0.9", "--pruned", "estimated", "--read_ahead", "off"] + ONE,
    "hier-paper-0.9": ["--mode", "squeezed", "--sparsity", "0.9", "--hierarchical", "--pruned", "dropped",
                       "--read_ahead", "off"],
    "read-ahead-0.9": ["--mode", "squeezed", "--sparsity", "0.9", "--pruned", "dropped", "--read_ahead", "on"] + ONE,
    # The accurate lookup: the pruned-cluster estimate and read-ahead, both in the kernels.
    "accurate-0.9": ["--mode", "squeezed", "--sparsity", "0.9", "--pruned", "estimated", "--read_ahead", "on"] + ONE,
    "accurate-0.7": ["--mode", "squeezed", "--sparsity", "0.7", "--pruned", "estimated", "--read_ahead", "on"] + ONE,
    "hier-accurate-0.9": ["--mode", "squeezed", "--sparsity", "0.9", "--hierarchical", "--pruned", "estimated",
                          "--read_ahead", "on"],
}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def median_time(fn, reps=10, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def measure_limits():
    src = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_s = median_time(lambda: dst.copy_(src))
    del src, dst
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_s = median_time(lambda: a @ b)
    del a, b
    torch.cuda.empty_cache()
    return {"copy_bytes_per_s": 2 * (2 << 30) / copy_s, "bf16_flops_per_s": 2 * 8192 ** 3 / mm_s}


def prefill_flops(s, n):
    # matmuls: 2 per parameter per token; attention: QK^T and PV over the causal half, per layer
    params = weight_bytes(s) / 2
    return 2 * params * n + 2 * s["layers"] * s["heads"] * 128 * n * n


def make_checkpoint(shape, context):
    # One checkpoint per shape for every context length this script runs (up to 1M tokens).
    path = f"/tmp/ckpt-{shape}"
    if not os.path.exists(os.path.join(path, "config.json")):
        max_pos = max(1 << 20, context) + 65536
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts/gpu/make_random_checkpoint.py"), path,
                        "--layers", "32", "--shape", shape, "--max_pos", str(max_pos)], check=True)
    return path


class Server:
    def __init__(self, model, store, log_path, context, extra_args=()):
        # store None: contexts in memory only (the ingest then has no store stage)
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            WRAPPER + [SERVER, "--model", model, "--device", "cuda", "--listen", "127.0.0.1:0"] +
            (["--store", store] if store else []) + [
             "--max_new_tokens", "4096", "--max_query_tokens", "8192", "--max_context_tokens", str(context),
             "--max_context_bytes", str(16 * context + (1 << 20)), "--max_message_bytes", str(64 << 20)] +
            list(extra_args),
            stdout=self.log, stderr=subprocess.STDOUT)
        self.addr = None
        for _ in range(1200):
            text = open(log_path).read()
            m = re.search(r"squeezeserve listening on (\S+)", text)
            if m:
                self.addr = m.group(1)
            if self.addr and self.ctl(["info"], check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + text[-3000:])
            time.sleep(0.5)
        raise RuntimeError("server did not start")

    def ctl(self, args, check=True, capture=True):
        return subprocess.run([CTL, "--server", self.addr, "--timeout", "3600"] + args, check=check,
                              capture_output=capture, text=True)

    def stop(self):
        # Under a wrapper, the server itself gets the signal: Nsight Compute writes its results when
        # the program it profiles exits, and a SIGTERM to the profiler left them unwritten.
        target = server_under(self.proc.pid) if WRAPPER else self.proc.pid
        os.kill(target or self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(300 if WRAPPER else 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def server_under(pid):
    """The pid of the squeezeserve process below `pid` (the wrapper's), or None."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    todo, server = list(children.get(pid, [])), os.path.realpath(SERVER)
    while todo:
        p = todo.pop()
        try:
            if os.path.realpath(f"/proc/{p}/exe") == server:
                return p
        except OSError:
            pass
        todo.extend(children.get(p, []))
    return None


def ingest(server, context, token_file, context_id="ctx"):
    start = time.time()
    out = server.ctl(["ingest", "--id", context_id, "--tokens", "@" + token_file, "--json"])
    wall = time.time() - start
    text = open(server.log_path).read()
    stages = {}
    m = re.findall(r"ingest " + context_id + r": \d+ tokens in ([\d.]+) s: (.*)", text)
    if m:
        for part in m[-1][1].split(","):
            mm = re.match(r"\s*(\w+) ([\d.]+) s", part)
            if mm:
                stages[mm.group(1)] = float(mm.group(2))
    peak = re.findall(r"peak device memory ([\d.]+) GB", text)
    iterations = re.findall(r"clustering: (\d+) Lloyd iterations per layer", text)
    coarse = re.findall(r"Lloyd iterations per layer \(coarse level: (\d+)\)", text)
    layer0 = re.findall(r"layer 0: seeding ([\d.]+) ms, Lloyd ([\d.]+) ms, coarse level ([\d.]+) ms, layout ([\d.]+) ms", text)
    engine_s = sum(stages.values())
    return {"wall_s": wall, "stages_s": stages, "store_and_rpc_s": max(0.0, wall - engine_s),
            "peak_device_gb": float(peak[-1]) if peak else None,
            "lloyd_iterations_per_layer": int(iterations[-1]) if iterations else None,
            "coarse_lloyd_iterations_per_layer": int(coarse[-1]) if coarse else None,
            "clustering_layer0_ms": dict(zip(("seeding", "lloyd", "coarse", "layout"), map(float, layer0[-1])))
            if layer0 else None,
            "info": json.loads(out.stdout)}


def generate(server, mode, batch, new_tokens, vocab, question_tokens):
    procs = []
    for stream in range(batch):
        r = random.Random(stream + 1)
        query = ",".join(str(r.randrange(3, vocab)) for _ in range(question_tokens))
        procs.append(subprocess.Popen(
            [CTL, "--server", server.addr, "--timeout", "3600", "generate", "--json", "--context", "ctx",
             "--tokens", query, "--max_new_tokens", str(new_tokens), "--ignore_eos"] + MODES[mode],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    rows = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"generate {mode} failed: {err.strip()[-500:]}")
        rows.append(json.loads(out))
    mean = lambda f: statistics.mean(f(r) for r in rows)
    usage = lambda r, k: float(r["usage"].get(k, 0))
    stats = lambda r, k, d=0.0: r["stats"].get(k, d)
    return {
        "ttft_ms": mean(lambda r: usage(r, "time_to_first_token_ms")),
        "tpot_ms": mean(lambda r: usage(r, "time_per_output_token_ms")),
        "kv_fraction_loaded": mean(lambda r: float(stats(r, "kv_fraction_loaded", 1.0))),
        "centroid_comparisons": mean(lambda r: float(stats(r, "centroid_comparisons_per_token", 0.0))),
        "served_mode": rows[0]["stats"].get("mode"),
        "backend": rows[0]["stats"].get("backend"),
        "note": rows[0]["stats"].get("note"),
    }


def question_limit_s(s, context, batch, kv_fraction, comparisons, limits, question_tokens):
    """The time to first token's floor: the questions' prefill (then one step's sampling, ignored), the
    larger of its bytes over the copy rate (a decode step's, step_bytes.py) and its FLOPs over the
    matmul rate (2 per parameter per token, and QK^T and PV over the selected context keys and the
    question's own causal half)."""
    q = question_tokens
    step = decode_step_bytes(s, context, batch, kv_fraction, comparisons, 0)
    keys = kv_fraction * context + q / 2
    flops = batch * (2 * weight_bytes(s) / 2 * q + 4 * s["layers"] * s["heads"] * 128 * q * keys)
    return max(step / limits["copy_bytes_per_s"], flops / limits["bf16_flops_per_s"])


def hf_peer(model, context, vocab, new_tokens, batches, reps):
    """HF transformers, SDPA, same checkpoint: prefill time of the context, then TPOT."""
    code = f"""
import json, statistics, time, torch, random
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained({model!r}, torch_dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
r = random.Random(0)
ids = torch.tensor([[r.randrange(3, {vocab}) for _ in range({context})]], device="cuda")
out = {{}}
with torch.inference_mode():
    for rep in range({reps}):  # the first warms up (where there are two)
        torch.cuda.synchronize(); t = time.time()
        res = m(ids, use_cache=True, logits_to_keep=1)
        torch.cuda.synchronize(); out["prefill_s"] = time.time() - t
    for batch in {batches!r}:
        past = res.past_key_values
        if batch > 1:
            for layer in range(len(past.layers) if hasattr(past, "layers") else 0):
                l = past.layers[layer]; l.keys = l.keys.expand(batch, -1, -1, -1).contiguous(); l.values = l.values.expand(batch, -1, -1, -1).contiguous()
        tok = torch.full((batch, 1), 5, device="cuda")
        times = []
        for i in range({new_tokens}):
            torch.cuda.synchronize(); t = time.time()
            step = m(tok, past_key_values=past, use_cache=True)
            past = step.past_key_values
            tok = step.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize(); times.append(time.time() - t)
        out[f"tpot_ms_b{{batch}}"] = 1e3 * statistics.median(times[2:])
        if batch == 1: res = m(ids, use_cache=True, logits_to_keep=1)
print(json.dumps(out))
"""
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"}
        return json.loads(p.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="llama3-8b", choices=SHAPES)
    p.add_argument("--context", type=int, default=32768)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--modes", default="dense,default,squeezed-0.9,squeezed-0.7,paper-0.9,estimated-0.9,hier-paper-0.9,"
                                      "read-ahead-0.9,accurate-0.9,accurate-0.7")
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--question_tokens", type=int, default=64,
                   help="tokens of each stream's question (its prefill is the TTFT): 64, or e.g. 1024 for the "
                        "long queries where the server's prefill_kernel auto takes the warp-specialized kernel")
    p.add_argument("--reps", type=int, default=3, help="measured runs per mode and batch (medians reported)")
    p.add_argument("--hf", action="store_true")
    p.add_argument("--no_store", action="store_true", help="contexts in memory only (no store stage)")
    p.add_argument("--hf_batches", default="1")
    p.add_argument("--hf_reps", type=int, default=2,
                   help="HF prefills run, the last timed (1 at 512K: a warm-up prefill there costs minutes)")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--server_args", default="",
                   help="more squeezeserve flags, space-separated, given with '=' since the value starts with '--' "
                        "(e.g. --server_args='--estimate_floor 0.0625'); recorded in the JSON")
    p.add_argument("--run", default="",
                   help="what was measured (the engine's commit, the command), recorded in the JSON's run field "
                        "(the GPU machine's copy of the tree may have no git history to take it from)")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    s = SHAPES[a.shape]
    batches = [int(b) for b in a.batches.split(",") if b]
    result = {"shape": a.shape, "context": a.context, "device": torch.cuda.get_device_name(0),
              "server_args": a.server_args, "question_tokens": a.question_tokens}
    if a.run:
        result["run"] = {"note": a.run}
    result["limits"] = limits = measure_limits()
    log(f"limits: copy {limits['copy_bytes_per_s'] / 1e12:.2f} TB/s, bf16 {limits['bf16_flops_per_s'] / 1e12:.0f} TFLOP/s")
    model = make_checkpoint(a.shape, a.context)
    token_file = tempfile.mktemp(suffix=".ids")
    r = random.Random(0)
    open(token_file, "w").write(",".join(str(r.randrange(3, s["vocab"])) for _ in range(a.context)))
    store = None if a.no_store else tempfile.mkdtemp(prefix="store-")
    server = Server(model, store, os.path.join(a.out, f"server_{a.shape}_{a.context}.log"), a.context,
                    a.server_args.split())
    try:
        if a.context <= 32768:
            # A first ingest of the same length builds libtorch's attention plans for these shapes (a
            # once-per-process cost); the measured one is the second, as HF's prefill below.
            result["ingest_cold"] = ingest(server, a.context, token_file, "cold")
            server.ctl(["delete", "--context", "cold"])
        ing = ingest(server, a.context, token_file)
        flops = prefill_flops(s, a.context)
        ing["prefill_limit_s"] = flops / limits["bf16_flops_per_s"]
        result["ingest"] = ing
        log(f"ingest {a.context}: {ing['wall_s']:.1f} s {ing['stages_s']} (prefill limit {ing['prefill_limit_s']:.2f} s)")
        rows = []
        for mode in [m for m in a.modes.split(",") if m]:
            for batch in batches:
                n = a.new_tokens
                try:
                    # A first run captures the step's CUDA graphs (once per batch shape and process);
                    # the next --reps are measured, each figure their median (this machine is shared).
                    started_ms = time.time() * 1e3
                    generate(server, mode, batch, min(n, 8), s["vocab"], a.question_tokens)
                    runs = [generate(server, mode, batch, n, s["vocab"], a.question_tokens) for _ in range(a.reps)]
                    row = dict(runs[0])
                    for key in ("ttft_ms", "tpot_ms", "kv_fraction_loaded", "centroid_comparisons"):
                        row[key] = statistics.median(r[key] for r in runs)
                    row["reps"] = a.reps
                    row["window_unix_ms"] = [started_ms, time.time() * 1e3]
                except RuntimeError as e:
                    rows.append({"mode": mode, "batch": batch, "error": str(e)})
                    log(f"{mode} b{batch}: {e}")
                    continue
                step_bytes = decode_step_bytes(s, a.context, batch, row["kv_fraction_loaded"],
                                               row["centroid_comparisons"], n)
                row.update(mode=mode, batch=batch, new_tokens=n, step_bytes=step_bytes,
                           tpot_limit_ms=1e3 * step_bytes / limits["copy_bytes_per_s"],
                           ttft_limit_ms=1e3 * question_limit_s(s, a.context, batch, row["kv_fraction_loaded"],
                                                                row["centroid_comparisons"], limits,
                                                                a.question_tokens))
                row["tpot_over_limit"] = row["tpot_ms"] / row["tpot_limit_ms"]
                row["ttft_over_limit"] = row["ttft_ms"] / row["ttft_limit_ms"]
                rows.append(row)
                log(f"{mode:15s} b{batch}: ttft {row['ttft_ms']:8.1f} ms (limit {row['ttft_limit_ms']:.1f})  tpot {row['tpot_ms']:7.2f} ms "
                    f"(limit {row['tpot_limit_ms']:.2f}, x{row['tpot_over_limit']:.2f})  kv {row['kv_fraction_loaded']:.3f} "
                    f"{row['backend']} {row['note'] or ''}")
        result["decode"] = rows
    finally:
        server.stop()
    attach_graph_timing(result.get("decode", []), server.log_path)
    attach_host_timing(result.get("decode", []), server.log_path)
    if a.hf:
        result["hf_sdpa"] = hf_peer(model, a.context, s["vocab"], 16, [int(b) for b in a.hf_batches.split(",")],
                                    a.hf_reps)
        log(f"HF SDPA: {result['hf_sdpa']}")
    path = os.path.join(a.out, f"full_{a.shape}_{a.context}.json")
    json.dump(result, open(path, "w"), indent=1)
    print_table(result)


GRAPH_LINE = re.compile(r"decode graph replays: batch (\d+), (\d+) steps, device ([\d.]+) ms, launch to launch "
                        r"([\d.]+) ms \(medians\), from (\d+) to (\d+) unix ms")


HOST_LINE = re.compile(r"decode step host times: batch (\d+), (\d+) steps: gap ([\d.na]+) ms, prepare ([\d.]+) ms, "
                       r"forward ([\d.]+) ms, sample ([\d.]+) ms, emit ([\d.]+) ms \(medians\), from (\d+) to (\d+) unix ms")
HOST_FIELDS = ("host_gap_ms", "host_prepare_ms", "host_forward_ms", "host_sample_ms", "host_emit_ms")


def for_each_row_lines(rows, log_path, pattern, attach):
    """Calls attach(row, lines) with the log lines matching `pattern` (groups: batch, steps, ..., the
    run's first and last unix ms) of each row's batch size whose runs overlap the row's window (its
    warm-up and measured generations)."""
    try:
        lines = pattern.findall(open(log_path).read())
    except OSError:
        return
    for r in rows:
        if "window_unix_ms" not in r:
            continue
        lo, hi = r["window_unix_ms"]
        attach(r, [l for l in lines if int(l[0]) == r["batch"] and float(l[-2]) <= hi and float(l[-1]) >= lo])


def step_weighted(lines, k):
    """The mean of group k over the lines, weighted by their steps (group 1); None without any."""
    vals = [(float(l[1]), float(l[k])) for l in lines if l[k] != "nan"]
    steps = sum(n for n, _ in vals)
    return sum(n * v for n, v in vals) / steps if steps > 0 else None


def attach_host_timing(rows, log_path):
    """The host's side of each row's decode steps (engine/engine_log.h DecodeStepTimer): host_gap_ms
    (between steps: the scheduler and the streams), host_prepare_ms, host_forward_ms (planning,
    launch and the wait for the GPU), host_sample_ms and host_emit_ms."""
    def attach(r, hits):
        for k, name in enumerate(HOST_FIELDS):
            v = step_weighted(hits, 2 + k)
            if v is not None:
                r[name] = v
    for_each_row_lines(rows, log_path, HOST_LINE, attach)


def attach_graph_timing(rows, log_path):
    """Where each row's TPOT goes: the engine logs, per run of replays of one decode graph, the median
    time of a replay on the device and from one replay's launch to the next (engine/decode_graphs.cc):
    graph_device_ms and graph_launch_to_launch_ms; their difference is what the host adds per step
    (planning, sampling, streaming)."""
    def attach(r, hits):
        device, cycle = step_weighted(hits, 2), step_weighted(hits, 3)
        if device is not None:
            r["graph_device_ms"] = device
            r["graph_launch_to_launch_ms"] = cycle
    for_each_row_lines(rows, log_path, GRAPH_LINE, attach)


def print_table(res):
    lim = res["limits"]
    ing = res.get("ingest", {})
    hf = res.get("hf_sdpa", {})
    print(f"### {res['shape']}, {res['context']} tokens ({res['device']}; copy {lim['copy_bytes_per_s'] / 1e12:.2f} TB/s, "
          f"bf16 {lim['bf16_flops_per_s'] / 1e12:.0f} TFLOP/s)")
    if ing:
        st = ing["stages_s"]
        print(f"ingest {ing['wall_s']:.2f} s: prefill {st.get('prefill', 0):.2f} s (limit {ing['prefill_limit_s']:.2f} s, "
              f"HF SDPA {hf.get('prefill_s', float('nan')):.2f} s), clustering {st.get('clustering', 0):.2f} s, "
              f"calibrating {st.get('calibrating', 0):.2f} s, store+rpc {ing['store_and_rpc_s']:.2f} s, "
              f"peak {ing.get('peak_device_gb')} GB")
    print("| mode | batch | served | TTFT ms | limit ms | × limit | TPOT ms | limit ms | × limit | graph on GPU ms | "
          "launch to launch ms | KV read | note |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in res.get("decode", []):
        if "error" in r:
            print(f"| {r['mode']} | {r['batch']} | error | | | | | | | | | | {r['error'][:80]} |")
            continue
        print(f"| {r['mode']} | {r['batch']} | {r['served_mode']}/{r['backend']} | {r['ttft_ms']:.1f} | "
              f"{r['ttft_limit_ms']:.2f} | {r['ttft_over_limit']:.1f} | {r['tpot_ms']:.2f} | {r['tpot_limit_ms']:.2f} | {r['tpot_over_limit']:.2f} | "
              f"{r.get('graph_device_ms', float('nan')):.2f} | {r.get('graph_launch_to_launch_ms', float('nan')):.2f} | "
              f"{r['kv_fraction_loaded']:.3f} | {r['note'] or ''} |")
    if hf:
        print(f"HF SDPA: {hf}")


if __name__ == "__main__":
    main()
