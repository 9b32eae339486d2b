"""Generates the stubs from the repo's protos (build_stubs.py) before setuptools looks for the
packages, so the wheel carries them."""
import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_stubs  # noqa: E402

build_stubs.build(build_stubs.HERE.parent.parent / "proto", build_stubs.HERE / "squeezeserve_client")
setup(packages=["squeezeserve_client", "squeezeserve_client._proto", "squeezeserve_client._proto.squeezeserve",
                "squeezeserve_client._proto.squeezeserve.v1", "squeezeserve_client._proto.grpc",
                "squeezeserve_client._proto.grpc.health", "squeezeserve_client._proto.grpc.health.v1"])
