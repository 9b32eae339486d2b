#!/usr/bin/python3
"""Soak test: mixed load on a real squeezeserve with a store, with faults injected, for a set time;
then every acknowledged context must be intact and every acknowledged delete must hold.

Load (--workers threads, each owning its own context ids so that the truth is known exactly): ingests
(new and replacing), greedy generates checked against the output recorded when the context was
acknowledged, squeezed generates, deletes, cancelled streams, slow readers (never read; the server
must end them), and uploads with an unparseable frame (must be refused, nothing stored).

Faults (one every --fault_every_s, workers paused meanwhile): kill -9 + restart; a disk-full phase
(the server restarted under a file size limit, so large contexts cannot be written: RESOURCE_EXHAUSTED,
never acknowledged); a corrupted file (a byte of a stored context flipped: that context may answer
DATA_LOSS, never different tokens). A call cut by a kill leaves its context indeterminate: its owner
deletes it before using it again.

Checks (after every restart and at the end): each acknowledged context answers GetContext with its
token count and generates exactly its recorded tokens; each acknowledged delete answers NOT_FOUND;
no call ever answered UNKNOWN, INTERNAL or UNIMPLEMENTED.

  soak.py --server_bin B --model M --proto_dir proto [--duration_s 600] [--workers 3] [--seed 1]
          [--fault_every_s 20] [--json_out F]
Exit 0 when nothing was violated. Needs Debian's python3-grpcio + python3-grpc-tools (stubs are
generated at start, as tests/python does)."""
import argparse
import hashlib
import importlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

import grpc
from grpc_tools import protoc

LISTEN_RE = re.compile(r"squeezeserve listening on (\S+)")
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED}
# What a call may answer while a fault is being injected around it.
FAULT_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
PROMPT = [5, 9, 14, 27]


def generate_stubs(proto_dir, out_dir):
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    if protoc.main(["grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out_dir}",
                    f"--grpc_python_out={out_dir}", "squeezeserve/v1/squeezeserve.proto"]) != 0:
        raise RuntimeError("grpc_tools.protoc failed")
    sys.path.insert(0, out_dir)
    return (importlib.import_module("squeezeserve.v1.squeezeserve_pb2"),
            importlib.import_module("squeezeserve.v1.squeezeserve_pb2_grpc"))


class Server:
    """The server process; restarted on the same store, optionally under a file size limit."""

    def __init__(self, args, store):
        self.args, self.store, self.process, self.address = args, store, None, None

    def start(self, fsize=None):
        argv = [self.args.server_bin, "--model", self.args.model, "--listen", "127.0.0.1:0", "--store", self.store,
                "--threads", "1", "--log_level", "error", "--max_stream_backlog", "8",
                "--stream_stall_timeout_ms", "2000", "--store_revalidate_ms", "0", "--grace_period_s", "2"]
        if fsize:
            argv = ["/usr/bin/prlimit", f"--fsize={fsize}"] + argv
        self.log = open(os.path.join(os.path.dirname(self.store), os.path.basename(self.store) + ".log"), "a")
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            match = LISTEN_RE.search(line or "")
            if match:
                self.address = match.group(1)
                return
            if self.process.poll() is not None:
                break
        raise RuntimeError("squeezeserve did not start")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


class Soak:
    def __init__(self, args, pb2, pb2_grpc):
        self.args, self.pb2, self.pb2_grpc = args, pb2, pb2_grpc
        self.rng = random.Random(args.seed)
        self.store = tempfile.mkdtemp(prefix="squeezeserve-soak-")
        self.server = Server(args, self.store)
        self.gate = threading.Condition()   # workers run while not self.paused
        self.paused, self.active = False, 0
        self.stop = False
        self.lock = threading.Lock()        # the book below
        self.acked = {}                      # id -> (num_tokens, expected greedy tokens)
        self.deleted = set()
        self.indeterminate = set()
        self.damaged = set()                 # corrupted on purpose: OK with its tokens, or DATA_LOSS
        self.calls = Counter()               # (op, code)
        self.violations = []
        self.faults = Counter()
        self.injections = 0
        self.checks = 0

    # -- plumbing --------------------------------------------------------------------------------
    def connect(self):
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = self.pb2_grpc.SqueezeserveStub(self.channel)
        for _ in range(600):
            try:
                self.info = self.stub.GetServerInfo(self.pb2.GetServerInfoRequest(), timeout=5)
                return
            except grpc.RpcError:
                time.sleep(0.1)
        raise RuntimeError("the server never became ready")

    def violation(self, text):
        with self.lock:
            self.violations.append(text)
        print(f"soak: VIOLATION: {text}", file=sys.stderr)

    def record(self, op, code):
        with self.lock:
            self.calls[(op, code.name)] += 1
        if code in BAD_CODES:
            self.violation(f"{op} answered {code.name}")

    def work_slot(self):
        """Context manager-ish: a worker waits while a fault is being injected."""
        with self.gate:
            while self.paused and not self.stop:
                self.gate.wait()
            self.active += 1

    def work_done(self):
        with self.gate:
            self.active -= 1
            self.gate.notify_all()

    def pause(self):
        with self.gate:
            self.paused = True
            while self.active:
                self.gate.wait()

    def resume(self):
        with self.gate:
            self.paused = False
            self.gate.notify_all()

    # -- calls -------------------------------------------------------------------------------------
    def tokens_for(self, cid, version):
        seed = int(hashlib.sha256(f"{cid}/{version}".encode()).hexdigest()[:8], 16)
        rng = random.Random(seed)
        return [3 + rng.randrange(self.info.model.vocab_size - 3) for _ in range(rng.randrange(48, 700))]

    def ingest(self, cid, tokens, dense_only):
        def requests():
            for begin in range(0, len(tokens), 256):
                r = self.pb2.IngestContextRequest()
                if begin == 0:
                    r.context_id = cid
                    r.index.dense_only = dense_only
                    r.index.observation_window = 16
                r.tokens.ids.extend(tokens[begin:begin + 256])
                yield r
        last = None
        for progress in self.stub.IngestContext(requests(), timeout=300):
            last = progress
        return last

    def greedy(self, cid, mode=None):
        r = self.pb2.GenerateRequest(context_id=cid)
        r.tokens.ids.extend(PROMPT)
        r.sampling.max_new_tokens = 8
        r.sampling.ignore_eos = True
        r.attention.mode = mode if mode is not None else self.pb2.AttentionOptions.DENSE
        return [t for response in self.stub.Generate(r, timeout=120) for t in response.token_ids]

    def op_ingest(self, cid, version):
        tokens = self.tokens_for(cid, version)
        try:
            last = self.ingest(cid, tokens, dense_only=self.rng.random() < 0.5)
            self.record("ingest", grpc.StatusCode.OK)
        except grpc.RpcError as error:
            self.record("ingest", error.code())
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "/" in error.details():
                self.violation(f"ingest RESOURCE_EXHAUSTED names a path: {error.details()}")
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                with self.lock:  # cut off by a fault: stored or not, we cannot know
                    self.indeterminate.add(cid)
            return
        if last is None or last.stage != "done" or last.context.num_tokens != len(tokens):
            self.violation(f"ingest {cid} acknowledged without its context: {last}")
            return
        try:
            expected = self.greedy(cid)
        except grpc.RpcError as error:
            self.record("generate", error.code())
            with self.lock:
                self.indeterminate.add(cid)
            return
        with self.lock:
            self.acked[cid] = (len(tokens), expected)
            self.deleted.discard(cid)
            self.damaged.discard(cid)
            self.indeterminate.discard(cid)

    def op_delete(self, cid):
        try:
            self.stub.DeleteContext(self.pb2.DeleteContextRequest(context_id=cid), timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        self.record("delete", code)
        if code in FAULT_CODES:
            with self.lock:  # it may have happened before the server died
                self.indeterminate.add(cid)
        if code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND):
            with self.lock:
                self.acked.pop(cid, None)
                self.damaged.discard(cid)
                self.indeterminate.discard(cid)
                self.deleted.add(cid)
        elif code == grpc.StatusCode.DATA_LOSS:
            self.violation(f"delete {cid}: DATA_LOSS")

    def verify(self, cid, where):
        """One acknowledged / deleted / damaged context against the book."""
        with self.lock:
            acked, deleted, damaged = self.acked.get(cid), cid in self.deleted, cid in self.damaged
            if cid in self.indeterminate:  # a call on it died with the server: its owner deletes it first
                return
        if acked is None and not deleted:
            return
        try:
            info = self.stub.GetContext(self.pb2.GetContextRequest(context_id=cid), timeout=60)
            tokens = self.greedy(cid)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        self.record("verify", code)
        self.checks += 1
        if deleted:
            if code != grpc.StatusCode.NOT_FOUND:
                self.violation(f"{where}: deleted context {cid} answered {code.name}")
            return
        if code == grpc.StatusCode.DATA_LOSS and damaged:
            return
        if code != grpc.StatusCode.OK:
            if code not in FAULT_CODES:
                self.violation(f"{where}: acknowledged context {cid} answered {code.name}")
            return
        if info.num_tokens != acked[0] or tokens != acked[1]:
            self.violation(f"{where}: context {cid} changed: {info.num_tokens} tokens, generates {tokens}, "
                           f"acknowledged {acked[0]} tokens generating {acked[1]}")

    def op_cancel(self, cid):
        r = self.pb2.GenerateRequest(context_id=cid)
        r.tokens.ids.extend(PROMPT)
        r.sampling.max_new_tokens = 64
        call = self.stub.Generate(r, timeout=60)
        try:
            next(call)
            call.cancel()
            self.record("cancel", grpc.StatusCode.CANCELLED)
        except (grpc.RpcError, StopIteration) as error:
            self.record("cancel", error.code() if isinstance(error, grpc.RpcError) else grpc.StatusCode.OK)

    def op_slow_reader(self, cid):
        """A stream nobody reads: the server must end it (stall timeout) while others go on."""
        channel = grpc.insecure_channel(self.server.address, options=[("grpc.http2.lookahead_bytes", 256),
                                                                      ("grpc.http2.bdp_probe", 0)])
        stub = self.pb2_grpc.SqueezeserveStub(channel)
        r = self.pb2.GenerateRequest(context_id=cid)
        r.tokens.ids.extend(PROMPT)
        r.sampling.max_new_tokens = 2000
        r.sampling.ignore_eos = True
        call = stub.Generate(r, timeout=60)
        time.sleep(3.5)  # past --stream_stall_timeout_ms
        code = grpc.StatusCode.OK
        try:
            for _ in call:
                pass
        except grpc.RpcError as error:
            code = error.code()
        self.record("slow_reader", code)
        channel.close()

    def op_garbage(self, cid):
        """An upload whose second frame is not protobuf: INVALID_ARGUMENT, nothing stored."""
        method = self.channel.stream_stream("/squeezeserve.v1.Squeezeserve/IngestContext",
                                            request_serializer=lambda b: b, response_deserializer=lambda b: b)
        first = self.pb2.IngestContextRequest(context_id=cid)
        first.tokens.ids.extend([5, 6, 7])
        frames = [first.SerializeToString(), b"\x1a\x04\x0a\x02\x05\xff", first.SerializeToString()[6:]]
        try:
            list(method(iter(frames), timeout=30))
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        self.record("garbage", code)
        if code == grpc.StatusCode.OK:
            self.violation(f"an upload with a malformed frame was acknowledged ({cid})")
        with self.lock:
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                self.deleted.add(cid)  # it must not exist (ids used for garbage are never ingested)

    # -- the worker and the faults ------------------------------------------------------------------
    def worker(self, index):
        rng = random.Random(self.args.seed * 1000 + index)
        ids = [f"w{index}-c{k}" for k in range(6)]
        versions = Counter()
        garbage = 0
        while not self.stop:
            self.work_slot()
            try:
                cid = rng.choice(ids)
                with self.lock:
                    indeterminate, acked = cid in self.indeterminate, cid in self.acked
                if indeterminate:
                    self.op_delete(cid)
                    continue
                roll = rng.random()
                if roll < 0.25 or not acked:
                    versions[cid] += 1
                    self.op_ingest(cid, versions[cid])
                elif roll < 0.5:
                    self.verify(cid, "worker")
                elif roll < 0.6:
                    try:
                        self.greedy(cid, self.pb2.AttentionOptions.SQUEEZED)
                        self.record("squeezed", grpc.StatusCode.OK)
                    except grpc.RpcError as error:
                        self.record("squeezed", error.code())
                elif roll < 0.72:
                    self.op_delete(cid)
                elif roll < 0.85:
                    self.op_cancel(cid)
                elif roll < 0.93:
                    garbage += 1
                    self.op_garbage(f"w{index}-garbage{garbage}")
                else:
                    self.op_slow_reader(cid)
            except Exception as error:  # a call cut by a fault in an odd place
                self.record("error", grpc.StatusCode.UNAVAILABLE)
                print(f"soak: worker {index}: {error!r}", file=sys.stderr)
            finally:
                self.work_done()

    def check_all(self, where):
        with self.lock:
            ids = sorted(set(self.acked) | self.deleted)
        for cid in ids:
            self.verify(cid, where)

    def corrupt_one(self):
        with self.lock:
            candidates = sorted(set(self.acked) - self.damaged)
        if not candidates:
            return
        cid = self.rng.choice(candidates)
        path = os.path.join(self.store, cid, "tensors.safetensors")
        if not os.path.exists(path):
            return
        with open(path, "r+b") as f:
            size = os.path.getsize(path)
            at = self.rng.randrange(max(1, size))
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(bytes([byte[0] ^ 0x10]))
        with self.lock:
            self.damaged.add(cid)
        self.faults["corrupt"] += 1

    def inject(self):
        kinds = ["kill_in_flight", "disk_full", "corrupt", "kill"]  # in turn, so a short run sees each
        kind = kinds[self.injections % len(kinds)]
        self.injections += 1
        if kind == "kill_in_flight":  # calls in flight die with the server: their contexts become indeterminate
            self.server.kill()
            self.faults["kill_in_flight"] += 1
        self.pause()
        try:
            if kind == "corrupt":
                self.corrupt_one()
                self.server.kill()
                self.server.start()
            elif kind == "disk_full":
                self.server.kill()
                self.server.start(fsize=120000)  # large contexts no longer fit
                self.faults["disk_full"] += 1
            elif kind == "kill":
                self.server.kill()
                self.server.start()
                self.faults["kill"] += 1
            else:
                self.server.start()
            self.connect()
            self.check_all(f"after {kind}")
        finally:
            self.resume()
        if kind == "disk_full":  # a phase of load with the disk full, then back to normal
            time.sleep(min(10, self.args.fault_every_s / 2))
            self.pause()
            try:
                self.server.kill()
                self.server.start()
                self.connect()
                self.check_all("after the disk-full phase")
            finally:
                self.resume()

    def run(self):
        self.server.start()
        self.connect()
        threads = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(self.args.workers)]
        for t in threads:
            t.start()
        start = time.monotonic()
        next_fault = start + self.args.fault_every_s
        while time.monotonic() - start < self.args.duration_s:
            time.sleep(0.2)
            if time.monotonic() >= next_fault:
                self.inject()
                next_fault = time.monotonic() + self.args.fault_every_s
        self.stop = True
        self.resume()
        for t in threads:
            t.join(timeout=300)
        self.check_all("at the end")
        exit_code = self.server.stop()
        if exit_code != 0:
            self.violation(f"SIGTERM: exit {exit_code}")
        return time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server_bin", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--proto_dir", required=True)
    parser.add_argument("--duration_s", type=float, default=600)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--fault_every_s", type=float, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json_out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as stubs:
        pb2, pb2_grpc = generate_stubs(args.proto_dir, stubs)
        soak = Soak(args, pb2, pb2_grpc)
        try:
            seconds = soak.run()
        finally:
            if soak.server.process and soak.server.process.poll() is None:
                soak.server.kill()
            subprocess.run(["rm", "-rf", soak.store, soak.store + ".log"])
    report = {
        "duration_s": round(seconds, 1),
        "workers": args.workers,
        "seed": args.seed,
        "calls": {f"{op} {code}": n for (op, code), n in sorted(soak.calls.items())},
        "faults": dict(soak.faults),
        "contexts_acknowledged_at_end": len(soak.acked),
        "deletes_acknowledged_at_end": len(soak.deleted),
        "damaged_on_purpose": len(soak.damaged),
        "verifications": soak.checks,
        "violations": soak.violations,
    }
    print(json.dumps(report, indent=2))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)
    return 1 if soak.violations else 0


if __name__ == "__main__":
    sys.exit(main())
