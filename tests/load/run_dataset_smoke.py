#!/usr/bin/python3
"""squeezeload on real text: the shipped dataset (client/squeezeload/datasets/ops_manual: documents and
questions) against squeezeserve on models/small (a tokenizer.json checkpoint), three ways: the Generate
RPC with text questions, the OpenAI endpoint with each prompt carrying its document (what another
server would get), and the OpenAI endpoint continuing the stored contexts (context_id). Checks the
JSON results, the configured percentiles and the per-request export. Loopback only; bounded in time."""
# (The OpenAI runs use a short generated workload: see SHORT_WORKLOAD.)
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time


def start_server(args):
    server = subprocess.Popen(
        [args.server_bin, "--model", args.model, "--listen", "127.0.0.1:0", "--openai_listen", "127.0.0.1:0",
         "--device", "cpu", "--log_level", "warn"],
        stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    found = {}

    def read_stdout():
        for line in server.stdout:
            for key, pattern in (("grpc", r"squeezeserve listening on (\S+)"), ("openai", r"squeezeserve openai on (\S+)")):
                match = re.search(pattern, line)
                if match:
                    found[key] = match.group(1)

    threading.Thread(target=read_stdout, daemon=True).start()
    deadline = time.monotonic() + 60
    while len(found) < 2 and time.monotonic() < deadline and server.poll() is None:
        time.sleep(0.05)
    if len(found) < 2:
        server.kill()
        raise SystemExit("squeezeserve did not print its addresses")
    return server, found


# The OpenAI runs put whole documents into prompt-only requests; on CI's CPU a 3.5K-token prompt takes
# tens of seconds to prefill, so they use short documents (the shipped dataset runs over gRPC, where
# the documents are stored contexts).
SHORT_WORKLOAD = {
    "seed": 3,
    "contexts": [{"id": "short-a", "synthetic_words": 150}, {"id": "short-b", "synthetic_words": 120}],
    "questions": [{"context": "short-a", "question": "\nQuestion: what is this about?\nAnswer:"},
                  {"context": "short-b", "question": "\nIn one sentence,"},
                  {"context": "short-b", "question": "\nThe first word was"}],
    "output_tokens": {"dist": "uniform", "min": 8, "max": 16},
}


def run_load(args, workload, extra, out_dir, name):
    result_path = os.path.join(out_dir, f"{name}.json")
    requests_path = os.path.join(out_dir, f"{name}.jsonl")
    command = [args.load_bin, "--workload", workload, "--concurrency", "2", "--num_requests", "6",
               "--duration", "60", "--percentiles", "50,90,99.9", "--json_out", result_path,
               "--requests_out", requests_path] + extra
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, timeout=120)
    print(done.stdout)
    if done.returncode != 0:
        raise SystemExit(f"{name}: squeezeload exited {done.returncode}")
    with open(result_path) as f:
        result = json.load(f)
    with open(requests_path) as f:
        requests = [json.loads(line) for line in f]
    problems = []
    if result.get("completed") != 6 or result.get("failed") != 0:
        problems.append(f"completed {result.get('completed')}, failed {result.get('failed')}: {result.get('errors_by_code')}")
    for key in ("p50_ttft_ms", "p90_ttft_ms", "p99.9_ttft_ms", "p99.9_e2el_ms"):
        if key not in result:
            problems.append(f"no {key} in the result")
    if result.get("total_input_tokens", 0) <= 6 * 4:
        problems.append(f"input tokens {result.get('total_input_tokens')}: the text questions were not counted")
    if len(requests) != 6 or not all(r["ok"] and r["output_tokens"] >= 8 and r["context_id"] for r in requests):
        problems.append(f"per-request export: {requests}")
    if not all(r.get("question_index", -1) >= 0 for r in requests):
        problems.append("per-request export: questions not recorded")
    if problems:
        raise SystemExit(f"{name}: " + "; ".join(problems))
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server_bin", required=True)
    parser.add_argument("--load_bin", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--workload", required=True)
    args = parser.parse_args()
    server, addresses = start_server(args)
    try:
        with tempfile.TemporaryDirectory() as out_dir:
            grpc = run_load(args, args.workload, ["--server", addresses["grpc"]], out_dir, "grpc")
            short = os.path.join(out_dir, "short_workload.json")
            with open(short, "w") as f:
                json.dump(SHORT_WORKLOAD, f)
            inline = run_load(args, short, ["--openai", f"http://{addresses['openai']}"], out_dir, "openai_inline")
            stored = run_load(args, short, ["--server", addresses["grpc"], "--openai", f"http://{addresses['openai']}",
                                            "--openai_context", "id"], out_dir, "openai_id")
            # Both count the documents as prompt tokens (OpenAI usage: cached ones included).
            for name, result in (("inline", inline), ("context_id", stored)):
                if result["total_input_tokens"] < 6 * 100:
                    raise SystemExit(f"{name}: {result['total_input_tokens']} input tokens do not cover the documents")
            print(f"dataset smoke: grpc p50 TTFT {grpc['p50_ttft_ms']:.1f} ms, openai inline "
                  f"{inline['p50_ttft_ms']:.1f} ms, openai context_id {stored['p50_ttft_ms']:.1f} ms")
    finally:
        server.terminate()
        server.wait(timeout=60)
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
