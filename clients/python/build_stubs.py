#!/usr/bin/env python3
"""Generates the package's gRPC stubs from the repo's protos with grpc_tools (Debian's
python3-grpc-tools, or pip's grpcio-tools): squeezeserve.v1 and grpc.health.v1, into
squeezeserve_client/_proto/, with imports rewritten to stay inside the package.

Usage: build_stubs.py [--proto_dir DIR] [--out PACKAGE_DIR]   (defaults: the repo's proto/, this package)
"""
import argparse
import os
import pathlib
import re
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTOS = ["squeezeserve/v1/squeezeserve.proto", "grpc/health/v1/health.proto"]


def build(proto_dir, package_dir):
    out = pathlib.Path(package_dir) / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + PROTOS) != 0:
        raise RuntimeError("grpc_tools.protoc failed")
    # Generated code imports its siblings as top-level packages (squeezeserve.v1, grpc.health.v1); the
    # second would shadow grpcio itself. Make them package-relative.
    for path in out.rglob("*.py"):
        text = re.sub(r"^from (squeezeserve\.v1|grpc\.health\.v1) import", r"from squeezeserve_client._proto.\1 import",
                      path.read_text(), flags=re.MULTILINE)
        path.write_text(text)
    for directory in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto_dir", default=str(HERE.parent.parent / "proto"))
    parser.add_argument("--out", default=str(HERE / "squeezeserve_client"))
    args = parser.parse_args()
    print(build(args.proto_dir, args.out))


if __name__ == "__main__":
    sys.exit(main())
