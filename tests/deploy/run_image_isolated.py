#!/usr/bin/python3
"""Runs the CPU image's runtime tree the way the image would, with nothing else visible.

No Docker engine exists in CI, so this does what `docker build --target cpu` + `docker run` would, with
the same pieces: the runtime tree is built by the script the Dockerfile runs
(deploy/docker/build_runtime_tree.sh); a root directory gets that tree where the Dockerfile copies it,
glibc (what debian:12-slim provides to it), the model at /models/model and the image user's home; then,
in new mount, PID and network namespaces (a user namespace too when not run as root), each command is
chroot'ed there and started as the image's user (uid 10001, when root) with the environment, entrypoint,
command and health check read from the Dockerfile's `cpu` stage.

Checks, in order: the health check passes once the model has loaded; a real ingest of the quickstart
document and a generate that must answer its pass key (90577); /metrics (build info, the Generate
count) and /healthz on the metrics port; SIGTERM drains with exit 0; with --auth_token_file the health
check still passes while an API call without the token is UNAUTHENTICATED.

Usage: run_image_isolated.py --repo DIR --build DIR --work DIR     (exit 1 on the first failure)
"""
import argparse
import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

IMAGE_UID = 10001
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # debian:12-slim's PATH
QUESTION = "\nWhat is the pass key for vault Lyra? The pass key for vault Lyra is"


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


# ---------- the Dockerfile's cpu stage ----------

def dockerfile_stage(path, name):
    """Instructions of stage `name` as (KEYWORD, argument) pairs, continuation lines joined."""
    text = open(path).read().replace("\\\n", " ")
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, argument = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)\s*$", argument, re.IGNORECASE)
            current = stages.setdefault(match.group(1) if match else argument, [])
        elif current is not None:
            current.append((keyword, argument.strip()))
    if name not in stages:
        fail(f"Dockerfile has no stage {name}")
    return stages[name]


def image_config(dockerfile):
    config = {"env": {"PATH": BASE_PATH}, "entrypoint": [], "cmd": [], "health": None, "copies": []}
    for keyword, argument in dockerfile_stage(dockerfile, "cpu"):
        if keyword == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", argument):
                config["env"][key] = value.replace("$PATH", config["env"].get("PATH", BASE_PATH))
        elif keyword == "ENTRYPOINT":
            config["entrypoint"] = json.loads(argument)
        elif keyword == "CMD":
            config["cmd"] = json.loads(argument)
        elif keyword == "HEALTHCHECK":
            config["health"] = json.loads(argument[argument.index("CMD") + 3:].strip())
        elif keyword == "COPY" and argument.startswith("--from="):
            source_stage = argument.split()[0][len("--from="):]
            config["copies"].append((source_stage, *argument.split()[1:]))
    build = " ".join(arg for keyword, arg in dockerfile_stage(dockerfile, "cpu-build") if keyword == "RUN")
    match = re.search(r"deploy/docker/build_runtime_tree\.sh build (\S+)", build)
    if not match:
        fail("the cpu-build stage does not run deploy/docker/build_runtime_tree.sh build OUT")
    if [c for c in config["copies"] if c[0] == "cpu-build" and c[1].rstrip("/") == match.group(1)] == []:
        fail(f"the cpu stage does not copy {match.group(1)} from cpu-build")
    config["tree_dest"] = [c for c in config["copies"] if c[0] == "cpu-build"][0][2]
    if not config["entrypoint"] or config["health"] is None:
        fail("the cpu stage needs ENTRYPOINT and HEALTHCHECK")
    return config


# ---------- the root the image would have ----------

def build_root(repo, build, work, config):
    tree, root = os.path.join(work, "tree"), os.path.join(work, "root")
    for path in (tree, root):
        shutil.rmtree(path, ignore_errors=True)
    subprocess.run([os.path.join(repo, "deploy/docker/build_runtime_tree.sh"), build, tree], check=True)
    shutil.copytree(tree, root + config["tree_dest"].rstrip("/"), symlinks=True, copy_function=os.link)
    # glibc is what the tree leaves to the base image: everything its files need that it lacks must be
    # glibc, or the tree is incomplete.
    tree_libs = set(os.listdir(os.path.join(tree, "lib")))
    base = set()
    for directory in ("bin", "lib"):
        for name in os.listdir(os.path.join(tree, directory)):
            out = subprocess.run(["ldd", os.path.join(tree, directory, name)], capture_output=True, text=True).stdout
            for lib_name, resolved in re.findall(r"^\s*(\S+) => (\S+)", out, re.MULTILINE):
                if lib_name not in tree_libs:
                    base.add(resolved)
            base.update(re.findall(r"^\s*(/\S*ld-linux\S*)", out, re.MULTILINE))
    glibc = re.compile(r"/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux-x86-64)\.so")
    if not_glibc := sorted(path for path in base if not glibc.search(path)):
        fail(f"the runtime tree lacks libraries its files load: {not_glibc}")
    for path in base:
        for target in {path, os.path.realpath(path)}:
            dest = root + target
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy2(os.path.realpath(path), dest)
    for directory in ("proc", "dev", "tmp", "etc/squeezeserve", "models", "var/lib/squeezeserve"):
        os.makedirs(os.path.join(root, directory), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    shutil.copytree(os.path.join(repo, "models/small"), os.path.join(root, "models/model"))
    shutil.copy(os.path.join(repo, "models/small/demo_document.txt"), os.path.join(root, "tmp/doc.txt"))
    with open(os.path.join(root, "etc/squeezeserve/tokens"), "w") as tokens:
        tokens.write("# test token\nsecret-token\n")
    with open(os.path.join(root, "tmp/token"), "w") as token:
        token.write("secret-token\n")
    if os.geteuid() == 0:
        os.chown(os.path.join(root, "var/lib/squeezeserve"), IMAGE_UID, IMAGE_UID)
    return root


# ---------- inside the namespaces ----------

def loopback_up():
    """`ip link set lo up` without iproute2 (a new network namespace starts with lo down)."""
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


def mount(source, target, fstype, flags=0):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None) != 0:
        fail(f"mount {source} {target}: {os.strerror(ctypes.get_errno())}")


class Image:
    def __init__(self, root, config):
        self.root, self.config = root, config

    def _enter(self):
        os.chroot(self.root)
        os.chdir("/")
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(IMAGE_UID)
            os.setuid(IMAGE_UID)

    def popen(self, argv, **kwargs):
        return subprocess.Popen(argv, env=dict(self.config["env"]), preexec_fn=self._enter, **kwargs)

    def run(self, argv, timeout=300):
        return subprocess.run(argv, env=dict(self.config["env"]), preexec_fn=self._enter, capture_output=True,
                              text=True, timeout=timeout)

    def start_server(self, extra_args=()):
        argv = self.config["entrypoint"] + self.config["cmd"] + list(extra_args)
        server = self.popen(argv, stdout=subprocess.PIPE, text=True)
        line = server.stdout.readline()
        if not line.startswith("squeezeserve metrics on "):
            server.kill()
            fail(f"unexpected first line from the server: {line!r}")
        return server

    def run_rpc(self, argv, attempts=5):
        """run(), again after a moment while squeezectl reports UNAVAILABLE (exit 10 + 14): a call that
        never reached the server (a fresh-clone CI run once saw one connect fail in this namespace,
        ENOENT, between two calls the server answered). A server that refuses calls still fails."""
        for _ in range(attempts - 1):
            result = self.run(argv)
            if result.returncode != 10 + 14:
                return result
            time.sleep(0.5)
        return self.run(argv)

    def wait_healthy(self, server):
        for _ in range(240):
            result = self.run(self.config["health"])
            if result.returncode == 0:
                return
            if server.poll() is not None:
                fail(f"the server exited with {server.returncode} before it was healthy")
            time.sleep(0.5)
        fail(f"the health check never passed: {result.stdout} {result.stderr}")


def stop(server):
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=60)
    if code != 0:
        fail(f"the server exited with {code} after SIGTERM (expected 0)")


def http_get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:9090{path}", timeout=10) as response:
        return response.status, response.read().decode()


def inside(args):
    root = args.root
    loopback_up()
    mount("proc", os.path.join(root, "proc"), "proc")
    mount("/dev", os.path.join(root, "dev"), None, 0x1000 | 0x4000)  # MS_BIND | MS_REC
    image = Image(root, json.loads(args.config))
    ctl = ["squeezectl", "--server", "127.0.0.1:50051", "--timeout", "120"]

    server = image.start_server()
    image.wait_healthy(server)
    print("health check passes (the image's HEALTHCHECK command)", flush=True)
    ingest = image.run(ctl + ["ingest", "--file", "/tmp/doc.txt", "--id", "ops-manual"])
    if ingest.returncode != 0:
        fail(f"ingest exited {ingest.returncode}: {ingest.stderr[-2000:]}")
    generate = image.run(ctl + ["generate", "--context", "ops-manual", "--prompt", QUESTION, "--max_new_tokens", "6",
                                "--mode", "squeezed", "--sparsity", "0.9"])
    if generate.returncode != 0 or "90577" not in generate.stdout:
        fail(f"generate exited {generate.returncode}, answered {generate.stdout!r}: {generate.stderr[-2000:]}")
    print(f"ingest + generate: the answer is {generate.stdout.strip()!r}", flush=True)
    status, metrics = http_get("/metrics")
    for expected in ("squeezeserve_build_info{", 'method="Generate",code="OK"} 1', "squeezeserve_context_bytes{"):
        if status != 200 or expected not in metrics:
            fail(f"/metrics lacks {expected!r}")
    if http_get("/healthz") != (200, "ok\n"):
        fail("/healthz is not 200 ok")
    print("/metrics and /healthz answer on port 9090", flush=True)
    stop(server)

    server = image.start_server(["--auth_token_file", "/etc/squeezeserve/tokens"])
    image.wait_healthy(server)
    anonymous = image.run_rpc(ctl + ["info"])
    if anonymous.returncode != 10 + 16:  # 10 + UNAUTHENTICATED
        fail(f"info without a token exited {anonymous.returncode}, expected 26 (UNAUTHENTICATED)")
    with_token = image.run_rpc(ctl + ["--token_file", "/tmp/token", "info"])
    if with_token.returncode != 0:
        fail(f"info with the token exited {with_token.returncode}: {with_token.stderr}")
    print("with --auth_token_file: the health check passes, API calls need the token", flush=True)
    stop(server)
    print("1 passed, 0 failed", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo")
    parser.add_argument("--build")
    parser.add_argument("--work")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        return inside(args)
    config = image_config(os.path.join(args.repo, "Dockerfile"))
    root = build_root(args.repo, args.build, args.work, config)
    namespaces = ["--mount", "--pid", "--net", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        namespaces = ["--user", "--map-root-user"] + namespaces
    command = ["unshare", *namespaces, sys.executable, os.path.abspath(__file__), "--inside", "--root", root,
               "--config", json.dumps(config)]
    sys.exit(subprocess.run(command).returncode)


if __name__ == "__main__":
    main()
