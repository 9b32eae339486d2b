#!/usr/bin/env bash
# Builds tests/fuzz/request_fuzzer with clang (libFuzzer + ASan + UBSan) in its own build directory and
# runs it for a bounded time. Exit 0: no crash, leak or sanitizer report; 77: no libFuzzer-capable
# clang here (ctest reports the test as skipped); anything else: a finding (the reproducer is written
# to the build directory as crash-*, leak-* or timeout-*).
#
# Usage: run_fuzz.sh BUILD_DIR [SECONDS]      (env CXX=clang++-NN to pick another clang)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:?usage: run_fuzz.sh BUILD_DIR [SECONDS]}"
seconds="${2:-60}"
cxx="${CXX_FUZZ:-clang++}"
if ! command -v "$cxx" >/dev/null; then
  echo "run_fuzz: $cxx not found; skipping (install clang and libclang-rt-14-dev)"
  exit 77
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if ! cmake -S "$here/standalone" -B "$build" "${generator[@]}" -DCMAKE_CXX_COMPILER="$cxx" \
     -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build.configure.log" 2>&1; then
  if grep -q "does not support -fsanitize=fuzzer" "$build.configure.log"; then
    echo "run_fuzz: $cxx has no libFuzzer runtime; skipping"
    exit 77
  fi
  cat "$build.configure.log"
  exit 1
fi
cmake --build "$build" -j "${FUZZ_JOBS:-2}"
corpus="$build/corpus"
mkdir -p "$corpus"
# Seeds: one valid-looking message of each RPC so the fuzzer starts inside the parsers.
printf '\x00\x0a\x05ctx-1\x12\x02hi\x22\x02\x08\x04' >"$corpus/seed-generate"
printf '\x01\x0b\x00\x0a\x05ctx-1\x1a\x02\x08\x05' >"$corpus/seed-ingest"
cd "$build"
# -rss_limit_mb keeps a runaway allocation a finding instead of an OOM of the CI machine.
exec ./request_fuzzer -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "$corpus"
