#!/bin/sh
# Copies binaries and the shared libraries they load (per ldd) into OUT/bin and OUT/lib, so a runtime
# image needs no -dev packages and no guessed runtime package names. glibc and the CUDA driver
# (libcuda, injected by the NVIDIA container runtime) stay with the base image.
# Usage: collect_runtime.sh OUT BINARY...
set -eu
out=$1; shift
mkdir -p "$out/bin" "$out/lib"
for bin in "$@"; do
  cp "$bin" "$out/bin/"
  ldd "$bin" | awk '/=> \// { print $3 }' \
    | grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libcuda)\.so' \
    | while read -r lib; do cp -Ln "$lib" "$out/lib/"; done
done
