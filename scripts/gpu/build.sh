#!/usr/bin/env bash
# Builds squeezeserve on the GPU machine (CUDA 13, PyTorch 2.11, no network, no gRPC/Abseil there).
# Run from the repo root there, with .gpu-deps/ (scripts/gpu/fetch_deps.sh, run here) carried along:
#   [BUILD_TARGETS="t1 t2"] source scripts/gpu/build.sh [cmake args...]
# Leaves the build in build-gpu/ and exports LD_LIBRARY_PATH for the unpacked packages.
set -euo pipefail
deps=/opt/deps
# Each package once per machine (a warm machine keeps /opt/deps; a package added since is unpacked too).
mkdir -p "$deps/.unpacked"
for deb in .gpu-deps/*.deb; do
  [ -e "$deps/.unpacked/$(basename "$deb")" ] || { dpkg -x "$deb" "$deps" && touch "$deps/.unpacked/$(basename "$deb")"; }
done
# The packages' pkg-config files say prefix=/usr; point them at where they were unpacked.
sed -i "s|^prefix=/usr|prefix=$deps/usr|" "$deps"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$deps"/usr/share/pkgconfig/*.pc 2>/dev/null || true
export PKG_CONFIG_PATH="$deps/usr/lib/x86_64-linux-gnu/pkgconfig:$deps/usr/share/pkgconfig:${PKG_CONFIG_PATH:-}"
export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu"
export CPATH="$deps/usr/include:$deps/usr/include/x86_64-linux-gnu"
export PATH="$deps/usr/bin:$PATH"
torch_prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
# One libtorch for the GPU validation and the CUDA image (Dockerfile TORCH_VERSION).
torch_here=$(python3 -c 'import torch;print(torch.__version__.split("+")[0])')
torch_image=$(sed -n 's/^ARG TORCH_VERSION=//p' Dockerfile)
[ "$torch_here" = "$torch_image" ] || echo "build.sh: warning: PyTorch $torch_here here, the CUDA image pins $torch_image" >&2
cmake -S . -B build-gpu -G "$(command -v ninja >/dev/null && echo Ninja || echo 'Unix Makefiles')" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr" \
  -DCMAKE_CUDA_ARCHITECTURES=90a -DSQUEEZESERVE_CUDA=ON -DOPENSSL_ROOT_DIR="$deps/usr" "$@"
# BUILD_TARGETS (space-separated) builds only those, e.g. "squeezeserve longctx_eval"; default all.
cmake --build build-gpu -j "$(nproc)" ${BUILD_TARGETS:+--target $BUILD_TARGETS}
