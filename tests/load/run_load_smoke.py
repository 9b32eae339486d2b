#!/usr/bin/python3
"""Starts squeezeserve on 127.0.0.1 (port 0), runs squeezeload closed-loop for ~3 s at concurrency 4,
and checks the JSON result is sane. Loopback only; bounded in time; exits non-zero on any failure."""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

LISTEN_RE = re.compile(r"squeezeserve listening on (\S+)")


def start_server(args, store_dir):
    server = subprocess.Popen(
        [args.server_bin, "--model", args.model, "--listen", "127.0.0.1:0", "--store", store_dir,
         "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    address = []

    def read_stdout():
        for line in server.stdout:
            match = LISTEN_RE.search(line)
            if match and not address:
                address.append(match.group(1))

    # The reader keeps draining stdout for the server's lifetime so it never blocks on a full pipe.
    threading.Thread(target=read_stdout, daemon=True).start()
    return server, address


def wait_for_address(server, address, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while not address and time.monotonic() < deadline and server.poll() is None:
        time.sleep(0.05)
    if not address:
        raise SystemExit("squeezeserve did not print its listening line")
    return address[0]


def check(result):
    problems = []
    if result.get("completed", 0) <= 0:
        problems.append("no completed requests")
    if result.get("failed", 1) != 0 or result.get("errors_by_code"):
        problems.append(f"errors: {result.get('errors_by_code')}")
    for metric in ("ttft", "e2el", "itl", "tpot"):
        p50, p99 = result[f"p50_{metric}_ms"], result[f"p99_{metric}_ms"]
        if not 0 <= p50 <= p99:
            problems.append(f"{metric}: want 0 <= p50 ({p50}) <= p99 ({p99})")
    if result["mean_ttft_ms"] <= 0 or result["mean_e2el_ms"] < result["mean_ttft_ms"]:
        problems.append("want 0 < mean TTFT <= mean E2EL")
    for field in ("request_throughput", "output_throughput", "total_token_throughput", "request_goodput"):
        if not result.get(field, 0) > 0:
            problems.append(f"{field} should be > 0, got {result.get(field)}")
    if result["total_output_tokens"] < result["completed"]:
        problems.append("fewer output tokens than completed requests")
    return problems


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--server_bin", "--load_bin", "--model", "--workload"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="squeezeload-smoke-") as tmp:
        server, address = start_server(args, os.path.join(tmp, "store"))
        try:
            address = wait_for_address(server, address)
            json_out = os.path.join(tmp, "result.json")
            # A loose SLO so goodput is exercised; the assertion is only goodput > 0.
            load = subprocess.run(
                [args.load_bin, "--server", address, "--workload", args.workload, "--concurrency", "4",
                 "--duration", "3", "--num_requests", "400", "--warmup_requests", "4",
                 "--request_timeout", "60", "--goodput", "e2el:60000", "--json_out", json_out],
                timeout=150, stdout=sys.stdout, stderr=sys.stderr)
            if load.returncode != 0:
                raise SystemExit(f"squeezeload exited {load.returncode}")
            with open(json_out) as f:
                result = json.load(f)
        finally:
            server.terminate()
            try:
                server.wait(timeout=40)
            except subprocess.TimeoutExpired:
                server.kill()
    problems = check(result)
    for p in problems:
        print("FAIL:", p)
    if problems:
        sys.exit(1)
    print(f"OK: {result['completed']} requests, {result['request_throughput']:.2f} req/s, "
          f"p50/p99 TTFT {result['p50_ttft_ms']:.1f}/{result['p99_ttft_ms']:.1f} ms")


if __name__ == "__main__":
    main()
