#!/usr/bin/env python3
"""Cross-language client test: a Python gRPC client (python3-grpcio, stubs generated now with
grpc_tools.protoc from proto/) ingests a context into the real squeezeserve and streams a generation.

Checks: streamed tokens (one message per token, usage on the last), greedy determinism against a
second call, NOT_FOUND for an unknown context, INVALID_ARGUMENT naming the field, and a clean exit 0
on SIGTERM. Exits non-zero on the first failure.
"""
import argparse
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

LISTENING = "squeezeserve listening on "


def generate_stubs(proto_dir, out_dir):
    proto = "squeezeserve/v1/squeezeserve.proto"
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}", proto]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed")
    sys.path.insert(0, out_dir)
    return (importlib.import_module("squeezeserve.v1.squeezeserve_pb2"),
            importlib.import_module("squeezeserve.v1.squeezeserve_pb2_grpc"))


def start_server(binary, model):
    server = subprocess.Popen([binary, "--model", model, "--listen", "127.0.0.1:0", "--threads", "1",
                               "--log_level", "warn"], stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if not line.startswith(LISTENING):
        server.kill()
        raise RuntimeError(f"unexpected first line from the server: {line!r}")
    return server, line[len(LISTENING):].strip()


def wait_until_ready(stub, pb2):
    for _ in range(600):
        try:
            return stub.GetServerInfo(pb2.GetServerInfoRequest(), timeout=5)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            time.sleep(0.1)
    raise RuntimeError("the server never finished loading")


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def run(stub, pb2):
    info = wait_until_ready(stub, pb2)
    vocab = info.model.vocab_size
    check(vocab > 10, f"vocab_size {vocab}")

    tokens = [3 + (i * 13 + 5) % (vocab - 3) for i in range(300)]

    def ingest_requests():
        first = pb2.IngestContextRequest(context_id="py-doc")
        first.tokens.ids.extend(tokens[:150])
        yield first
        rest = pb2.IngestContextRequest()
        rest.tokens.ids.extend(tokens[150:])
        yield rest

    progress = list(stub.IngestContext(ingest_requests(), timeout=120))
    check(progress and progress[-1].stage == "done", f"ingest ended with {progress[-1:]}")
    check(progress[-1].context.context_id == "py-doc", "context id")
    check(progress[-1].context.num_tokens == 300, f"num_tokens {progress[-1].context.num_tokens}")

    request = pb2.GenerateRequest(context_id="py-doc", include_logprobs=True)
    request.tokens.ids.extend([5, 6, 7, 8])
    request.sampling.max_new_tokens = 10
    request.sampling.ignore_eos = True
    responses = list(stub.Generate(request, timeout=120))
    streamed = [t for r in responses for t in r.token_ids]
    check(len(responses) == 10, f"{len(responses)} messages, expected one per token")
    check(len(streamed) == 10, f"{len(streamed)} tokens")
    check(all(0 <= t < vocab for t in streamed), "tokens in the vocabulary")
    check(len([p for r in responses for p in r.logprobs]) == 10, "one logprob per token")
    last = responses[-1]
    check(last.finish_reason == pb2.LENGTH, f"finish_reason {last.finish_reason}")
    check(last.usage.prompt_tokens == 4 and last.usage.cached_tokens == 300, f"usage {last.usage}")
    again = [t for r in stub.Generate(request, timeout=120) for t in r.token_ids]
    check(again == streamed, "greedy generation is deterministic across calls")

    missing = pb2.GenerateRequest(context_id="no-such-context")
    missing.tokens.ids.append(1)
    try:
        list(stub.Generate(missing, timeout=30))
        check(False, "unknown context should fail")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.NOT_FOUND, f"got {error.code()}: {error.details()}")

    bad = pb2.GenerateRequest(context_id="py-doc")
    bad.tokens.ids.append(1)
    bad.sampling.top_p = 1.5
    try:
        list(stub.Generate(bad, timeout=30))
        check(False, "top_p 1.5 should fail")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT and "sampling.top_p" in error.details(),
              f"got {error.code()}: {error.details()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True, help="squeezeserve binary")
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--proto_dir", required=True, help="directory holding squeezeserve/v1/*.proto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as stub_dir:
        pb2, pb2_grpc = generate_stubs(args.proto_dir, stub_dir)
        server, address = start_server(args.server, args.model)
        try:
            with grpc.insecure_channel(address) as channel:
                run(pb2_grpc.SqueezeserveStub(channel), pb2)
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=60)
    check(code == 0, f"squeezeserve exited {code} after SIGTERM")
    print("python client test: OK")


if __name__ == "__main__":
    main()
