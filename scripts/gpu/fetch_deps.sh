#!/usr/bin/env bash
# Downloads (on this Debian machine) the .deb packages the GPU machine lacks — it has CUDA, PyTorch,
# protobuf 3.21 and spdlog but no gRPC, Abseil or sentencepiece, and no network — into .gpu-deps/
# (ignored by git), to be named in the device call's `carry` and unpacked there by build.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu-deps && cd .gpu-deps
# The build's libraries: the list CI and the images use (deploy/build-packages.txt), minus what the GPU
# machine has (protobuf, spdlog); then the Debian 12 libraries those link (the GPU machine runs them
# from /opt/deps) and the test framework.
read -ra build_packages <<< "$(sed 's/#.*//' ../deploy/build-packages.txt | tr '\n' ' ')"
pkgs=()
for p in "${build_packages[@]}"; do
  case "$p" in protobuf-compiler|libprotobuf-dev|libspdlog-dev) ;; *) pkgs+=("$p") ;; esac
done
# (prometheus-cpp-dev's CMake config checks that the pull and push libraries exist, though only core is linked.)
pkgs+=(libgrpc-dev libgrpc29 libgrpc++1.51 libabsl20220623 libre2-9 libre2-dev libc-ares2 libc-ares-dev libprotoc32
       libsentencepiece0 libcpp-httplib0.11 libbrotli1 libbrotli-dev libprometheus-cpp-core1.0
       libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0 libxxhash0 libssl3 zlib1g-dev zlib1g
       libpcre2-8-0 libutf8proc2 libcivetweb-dev libcivetweb1 civetweb libcurl4-openssl-dev libcurl4 libgtest-dev libgmock-dev googletest)
missing=()
for p in "${pkgs[@]}"; do ls "${p}"_*.deb >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] || apt-get download "${missing[@]}"
# The static archives of the -dev packages (libgrpc.a, libcrypto.a, ...: 8 of the 21 MiB) are never
# linked (gRPC's CMake targets and FindOpenSSL take the shared libraries; GoogleTest, static only,
# keeps its own); without them the carried tree (~44 MiB tracked, models/small included) and these
# packages fit the device call's 64 MiB.
for deb in *-dev_*.deb; do
  case "$deb" in libgtest-dev_*|libgmock-dev_*) continue ;; esac
  dpkg-deb -c "$deb" | awk '/\.a$/ { found = 1 } END { exit !found }' || continue
  tmp=$(mktemp -d)
  dpkg-deb -R "$deb" "$tmp"
  find "$tmp" -name '*.a' -delete
  dpkg-deb -b "$tmp" "$deb" >/dev/null
  rm -rf "$tmp"
done
du -sh .
