#!/usr/bin/python3
"""End-to-end smoke test of the long-context evaluation (ctest longctx_eval_smoke): make_tasks.py at a
tiny size with the model's own tokenizer -> squeezeserve on 127.0.0.1 (port 0) -> longctx_eval over
every configuration; checks the JSON. The model's answers are noise; the point is the pipeline: every
task, every configuration, no failed RPC, perplexity from the prompt log-probs, KV fractions.
Loopback only; bounded in time; exits non-zero on any failure."""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LISTEN_RE = re.compile(r"squeezeserve listening on (\S+)")
TASKS = ("kv_retrieval", "passkey", "function_copy", "perplexity")
CONFIGS = ["dense"] + [f"{kind}{p}" for kind in ("flat", "hier") for p in (50, 70, 80, 90)]
CONTINUATION = 24


def start_server(args):
    server = subprocess.Popen(
        [args.server_bin, "--model", args.model, "--listen", "127.0.0.1:0", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    address = []

    def read_stdout():
        for line in server.stdout:
            match = LISTEN_RE.search(line)
            if match and not address:
                address.append(match.group(1))

    threading.Thread(target=read_stdout, daemon=True).start()
    deadline = time.monotonic() + 60
    while not address and time.monotonic() < deadline and server.poll() is None:
        time.sleep(0.05)
    if not address:
        server.kill()
        raise SystemExit("squeezeserve did not print its listening line")
    return server, address[0]


def check(result, tasks_file):
    problems = []
    if result.get("rpc_errors") != 0:
        problems.append(f"rpc_errors = {result.get('rpc_errors')}")
    queries = {}
    with open(tasks_file) as f:
        for line in f:
            record = json.loads(line)
            queries[record["task"]] = len(record["queries"])
    cells = {(r["task"], r["config"]): r for r in result["results"]}
    for task in TASKS:
        for config in CONFIGS:
            cell = cells.get((task, config))
            if cell is None:
                problems.append(f"no result for {task} / {config}")
                continue
            if cell["errors"]:
                problems.append(f"{task} / {config}: {cell['errors']} errors")
            kv = cell["kv_fraction_loaded"]
            if config == "dense" and abs(kv - 1) > 1e-6:
                problems.append(f"{task} / dense: kv fraction {kv}, want 1")
            if config != "dense" and not 0 < kv < 1:
                problems.append(f"{task} / {config}: kv fraction {kv}, want in (0, 1)")
            if task == "perplexity":
                if cell.get("scored_tokens") != CONTINUATION or not (1 < cell.get("ppl", 0) < math.inf):
                    problems.append(f"perplexity / {config}: {cell}")
            elif cell["n"] != queries[task] or not 0 <= cell.get("accuracy", -1) <= 1:
                problems.append(f"{task} / {config}: n = {cell['n']} (want {queries[task]}), {cell}")
    for c in result["contexts"]:
        if not c.get("indexed") or c.get("index_levels") != 2:
            problems.append(f"context {c['id']}: not indexed with 2 levels: {c}")
    if "| hierarchical 90% |" not in result.get("tables_markdown", ""):
        problems.append("the table has no 'hierarchical 90%' row")
    return problems


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--server_bin", "--eval_bin", "--model"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="longctx-eval-smoke-") as tmp:
        tasks = os.path.join(tmp, "tasks.jsonl")
        subprocess.run(
            [sys.executable, os.path.join(HERE, "make_tasks.py"), "--out", tasks, "--lengths", "700",
             "--contexts_per_task", "1", "--queries", "4", "--continuation", str(CONTINUATION),
             "--max_answer_tokens", "64", "--tokenizer", os.path.join(args.model, "tokenizer.model")],
            check=True, timeout=60)
        server, address = start_server(args)
        try:
            out = os.path.join(tmp, "result.json")
            run = subprocess.run(
                [args.eval_bin, "--server", address, "--tasks", tasks, "--out", out, "--configs", "all",
                 "--concurrency", "4", "--timeout", "60", "--outputs", os.path.join(tmp, "outputs.jsonl")],
                timeout=90, stdout=sys.stdout, stderr=sys.stderr)
            if run.returncode != 0:
                raise SystemExit(f"longctx_eval exited {run.returncode}")
            with open(out) as f:
                result = json.load(f)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        problems = check(result, tasks)
    if problems:
        print("longctx_eval smoke: FAILED\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"longctx_eval smoke: ok ({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
