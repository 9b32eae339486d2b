#!/usr/bin/env bash
# Downloads (on this Debian machine) the .deb packages the GPU machine lacks — it has CUDA, PyTorch,
# protobuf 3.21 and spdlog but no gRPC, Abseil or sentencepiece, and no network — into .gpu-deps/
# (ignored by git), to be named in the device call's `carry` and unpacked there by build.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu-deps && cd .gpu-deps
pkgs=(libgrpc++-dev libgrpc-dev libgrpc29 libgrpc++1.51 protobuf-compiler-grpc libabsl-dev libabsl20220623
      libre2-9 libre2-dev libc-ares2 libc-ares-dev libprotoc32 libsentencepiece-dev libsentencepiece0
      nlohmann-json3-dev libgtest-dev libgmock-dev googletest libcpp-httplib-dev libcpp-httplib0.11 libbrotli1 libbrotli-dev
      libssl-dev libssl3 zlib1g-dev zlib1g)
missing=()
for p in "${pkgs[@]}"; do ls "${p}"_*.deb >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] || apt-get download "${missing[@]}"
du -sh .
