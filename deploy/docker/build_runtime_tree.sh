#!/bin/sh
# Builds the runtime tree of an image from a build directory: OUT/bin (the binaries) and OUT/lib (the
# dlopen'ed sentencepiece module and every shared library the binaries and the module load, per ldd),
# so the runtime stage needs no -dev packages and no guessed runtime package names. Both Dockerfile
# stages run this, and so does the CI test that runs the tree in isolation (tests/deploy/).
# glibc stays with the base image, and so does the CUDA driver (libcuda, injected by the NVIDIA container
# runtime). Every shared library in each LIBDIR is copied as well, for libraries a dependency loads
# lazily (libtorch's cuDNN engines, NVRTC builtins).
# Usage: build_runtime_tree.sh BUILD_DIR OUT [LIBDIR...]
set -eu
build=$1 out=$2
shift 2
cmake --install "$build" --prefix "$out" >/dev/null
mkdir -p "$out/lib"
for dir in "$@"; do
  for lib in "$dir"/*.so*; do cp -L "$lib" "$out/lib/"; done
done
for file in "$out"/bin/* "$out"/lib/*.so*; do
  [ -e "$file" ] || continue
  ldd "$file" | awk '/=> \// { print $3 }' \
    | grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux[^/]*|libcuda)\.so' \
    | while read -r lib; do
        [ -e "$out/lib/$(basename "$lib")" ] || cp -L "$lib" "$out/lib/"
      done
done
