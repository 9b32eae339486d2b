#!/usr/bin/env bash
# Installs the Debian 12 packages squeezeserve builds and tests with (CPU build; no GPU needed).
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev
  libopenblas0-openmp                # libtorch's BLAS: ~10x the CPU matmul speed of the reference libblas3
  libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev
  libabsl-dev libspdlog-dev nlohmann-json3-dev libssl-dev openssl
  libcpp-httplib-dev                 # /metrics and /healthz (server/metrics_http)
  clang libclang-rt-14-dev           # tests/fuzz (libFuzzer + sanitizers)
  libsentencepiece-dev sentencepiece
  libpcre2-dev libutf8proc-dev       # tokenizer.json: split regexes, Unicode normalization (engine/tokenizer_json*)
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-grpcio python3-grpc-tools python3-protobuf python3-sentencepiece python3-numpy
  python3-yaml python3-jsonschema python3-matplotlib yamllint
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
