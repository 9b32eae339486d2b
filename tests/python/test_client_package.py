#!/usr/bin/env python3
"""The Python client package (clients/python) against the real squeezeserve, with Debian's
python3-grpcio and the stubs built from proto/ now (build_stubs.py, into a temporary copy).

The server runs with a bearer token, JSON logs and /metrics, and admits one stream at a time.
Checks, through the helper: health without a token and UNAUTHENTICATED without one; ingest of text in
chunks with progress; generate and stream (one message per token, usage last, pieces adding up to
the whole answer, greedy answers equal); get/list/delete; NOT_FOUND and INVALID_ARGUMENT naming the
field as SqueezeserveError; RESOURCE_EXHAUSTED carrying grpc-retry-pushback-ms while the only stream
slot is taken, and the helper retrying after it until the slot frees. Then the server's own surface: reflection v1 listing every service and describing the
health service; one JSON object per stderr line, with an access line per API call; `--help` exiting
0 without build paths; SIGTERM exiting 0.
"""
import argparse
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

TOKEN = "py-test-token"
LISTENING = "squeezeserve listening on "


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def load_package(repo, work):
    package = os.path.join(work, "squeezeserve_client")
    shutil.copytree(os.path.join(repo, "clients/python/squeezeserve_client"), package,
                    ignore=shutil.ignore_patterns("_proto", "__pycache__"))
    sys.path.insert(0, os.path.join(repo, "clients/python"))
    build_stubs = importlib.import_module("build_stubs")
    build_stubs.build(os.path.join(repo, "proto"), package)
    sys.path[0] = work
    return importlib.import_module("squeezeserve_client")


def reflection_stubs(repo, work):
    from grpc_tools import protoc
    out = os.path.join(work, "reflection")
    os.makedirs(out)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    check(protoc.main(["protoc", f"-I{repo}/proto", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}",
                       "grpc/reflection/v1/reflection.proto"]) == 0, "protoc for reflection.proto")
    # Load the generated modules by path: a package named `grpc` would shadow grpcio.
    modules = {}
    for name in ("reflection_pb2", "reflection_pb2_grpc"):
        path = os.path.join(out, "grpc/reflection/v1", f"{name}.py")
        text = open(path).read().replace("from grpc.reflection.v1 import reflection_pb2", "import reflection_pb2")
        open(path, "w").write(text)
    sys.path.insert(0, os.path.join(out, "grpc/reflection/v1"))
    return importlib.import_module("reflection_pb2"), importlib.import_module("reflection_pb2_grpc")


def start_server(binary, model, work):
    token_file = os.path.join(work, "tokens")
    with open(token_file, "w") as f:
        f.write(f"# test\n{TOKEN}\n")
    stderr = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen([binary, "--model", model, "--listen", "127.0.0.1:0", "--threads", "1",
                               "--auth_token_file", token_file, "--log_format", "json",
                               "--max_concurrent_streams", "1", "--max_queued_requests", "0",
                               "--max_new_tokens", "4000"],
                              stdout=subprocess.PIPE, stderr=stderr, text=True)
    line = server.stdout.readline()
    if not line.startswith(LISTENING):
        server.kill()
        raise RuntimeError(f"unexpected first line from the server: {line!r}")
    return server, line[len(LISTENING):].strip(), stderr.name


def run_client(ss, address):
    import grpc
    anonymous = ss.Client(address, timeout=60)
    client = ss.Client(address, token=TOKEN, timeout=120)
    info = client.wait_until_ready()
    check(info.model.vocab_size > 10, f"server info {info}")
    check(anonymous.health() == "SERVING", "health answers without a token")
    try:
        anonymous.info()
        check(False, "info without a token should fail")
    except ss.SqueezeserveError as error:
        check(error.code == grpc.StatusCode.UNAUTHENTICATED, f"got {error}")

    text = "The vault Lyra keeps its pass key 90577 under the old oak. " * 40
    stages = []
    context = client.ingest(text, context_id="py-doc", on_progress=lambda p: stages.append(p.stage))
    check(context.context_id == "py-doc" and context.num_tokens > 100, f"ingested {context}")
    check(stages[-1] == "done" and "prefill" in stages, f"progress stages {stages}")

    answer = client.generate("py-doc", "\nThe pass key of vault Lyra is", max_new_tokens=8, ignore_eos=True,
                             logprobs=True)
    check(len(answer.token_ids) == 8 and len(answer.logprobs) == 8, f"answer {answer}")
    check(answer.finish_reason == "LENGTH", f"finish_reason {answer.finish_reason}")
    check(answer.usage.cached_tokens == context.num_tokens and answer.usage.completion_tokens == 8,
          f"usage {answer.usage}")
    pieces = list(client.stream("py-doc", "\nThe pass key of vault Lyra is", max_new_tokens=8, ignore_eos=True))
    check(len(pieces) == 8, f"{len(pieces)} streamed messages, expected one per token")
    check("".join(p.text for p in pieces) == answer.text, "streamed pieces add up to the whole answer")
    check([t for p in pieces for t in p.token_ids] == answer.token_ids, "greedy answers are equal")
    check(pieces[-1].usage.completion_tokens == 8 and not pieces[0].HasField("usage"), "usage on the last message")
    by_tokens = client.generate("py-doc", tokens=[5, 6, 7], max_new_tokens=3, ignore_eos=True, mode="dense")
    check(len(by_tokens.token_ids) == 3 and by_tokens.usage.prompt_tokens == 3, f"token prompt {by_tokens}")

    check([c.context_id for c in client.list()] == ["py-doc"], "list")
    check(client.get("py-doc").num_tokens == context.num_tokens, "get")
    for call, code, field in [(lambda: client.get("nope"), grpc.StatusCode.NOT_FOUND, "context_id"),
                              (lambda: client.generate("py-doc", "x", top_p=1.5), grpc.StatusCode.INVALID_ARGUMENT,
                               "sampling.top_p")]:
        try:
            call()
            check(False, f"expected {code}")
        except ss.SqueezeserveError as error:
            check(error.code == code and field in error.details, f"expected {code} naming {field}, got {error}")
            check(len(error.request_id) > 0, "errors carry the request id")

    # The only stream slot taken: a second generation is refused with the standard retry hint...
    long_stream = client.stream("py-doc", tokens=[5], max_new_tokens=2000, ignore_eos=True)
    next(long_stream)  # the slot is held while the stream runs
    no_retry = ss.Client(address, token=TOKEN, retries=0, timeout=60)
    try:
        no_retry.generate("py-doc", tokens=[5], max_new_tokens=1)
        check(False, "a second stream should be refused")
    except ss.SqueezeserveError as error:
        check(error.code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"got {error}")
        check(error.retry_pushback_ms == 250, f"grpc-retry-pushback-ms {error.retry_pushback_ms}")
    # ...and the helper, retrying after the hint, gets through once the slot is free.
    patient = ss.Client(address, token=TOKEN, retries=20, timeout=60)
    threading.Timer(0.6, long_stream.close).start()  # cancels the call, freeing the slot
    started = time.monotonic()
    later = patient.generate("py-doc", tokens=[5], max_new_tokens=2, ignore_eos=True)
    check(len(later.token_ids) == 2 and time.monotonic() - started >= 0.5, "retried after the pushback")
    client.delete("py-doc")
    check(client.list() == [], "delete")
    for c in (anonymous, client, no_retry, patient):
        c.close()


def run_server_surface(repo, work, address, binary):
    import grpc
    reflection_pb2, reflection_pb2_grpc = reflection_stubs(repo, work)
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="squeezeserve.v1.Squeezeserve"),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol")]
        answers = list(stub.ServerReflectionInfo(iter(requests), timeout=30))
    services = {s.name for s in answers[0].list_services_response.service}
    for name in ("squeezeserve.v1.Squeezeserve", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                 "grpc.reflection.v1alpha.ServerReflection"):
        check(name in services, f"reflection v1 lists {name}: {services}")
    check(len(answers[1].file_descriptor_response.file_descriptor_proto) == 1, "health.proto described")
    check(len(answers[2].file_descriptor_response.file_descriptor_proto) >= 1, "squeezeserve.proto described")
    check(answers[3].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0], "unknown symbol: NOT_FOUND")

    help_run = subprocess.run([binary, "--help"], capture_output=True, text=True)
    check(help_run.returncode == 0, f"--help exited {help_run.returncode}")
    check(repo not in help_run.stdout and ".cc" not in help_run.stdout, "--help shows no build-machine paths")
    check("--log_format" in help_run.stdout and "--served_model_name" in help_run.stdout, "--help lists the flags")


def check_logs(log_path):
    lines = [line for line in open(log_path).read().splitlines() if line]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"a stderr line is not JSON: {line!r}")
    check(all({"time", "level", "logger"} <= set(r) for r in records), "every line has time, level, logger")
    access = [r for r in records if r["logger"] == "access"]
    generates = [r for r in access if r["method"].endswith("/Generate") and r["code"] == "OK"]
    check(len(generates) >= 3 and generates[0].get("completion_tokens") == 8 and generates[0]["context_id"] == "py-doc",
          f"access lines for Generate: {generates[:1]}")
    check(any(r["code"] == "UNAUTHENTICATED" for r in access), "the refused call has its access line")
    check(any(r["code"] == "RESOURCE_EXHAUSTED" for r in access), "the overloaded call has its access line")
    check(not any(r["method"].startswith("/grpc.health") for r in access), "health checks are not logged at info")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True, help="squeezeserve binary")
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--repo", required=True, help="repository root")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        ss = load_package(args.repo, work)
        server, address, log_path = start_server(args.server, args.model, work)
        try:
            run_client(ss, address)
            run_server_surface(args.repo, work, address, args.server)
        except BaseException:
            print("server log (last lines):\n" + "".join(open(log_path).readlines()[-30:]))
            raise
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=60)
        check(code == 0, f"squeezeserve exited {code} after SIGTERM")
        check_logs(log_path)
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
