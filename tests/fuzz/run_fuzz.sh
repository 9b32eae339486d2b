#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/standalone: clang, libFuzzer + ASan + UBSan) in their own
# build directory and runs each for a bounded time over its committed corpus (tests/fuzz/corpus/NAME;
# new units go to BUILD_DIR/corpus-NAME, never into the source tree). Exit 0: no crash, leak, hang or
# sanitizer report; 77: no libFuzzer-capable clang here (ctest reports the test as skipped); anything
# else: a finding (the reproducer is written to BUILD_DIR as crash-*, leak-* or timeout-*; replay it
# with BUILD_DIR/NAME FILE).
#
# Usage: run_fuzz.sh BUILD_DIR [SECONDS_EACH] [TARGET...]   (default: every target)
#        env CXX_FUZZ=clang++-NN to pick another clang
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:?usage: run_fuzz.sh BUILD_DIR [SECONDS_EACH] [TARGET...]}"
seconds="${2:-60}"
shift $(( $# >= 2 ? 2 : $# ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request_fuzzer rpc_fuzzer store_loader_fuzzer)
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
cmake --build "$build" -j "${FUZZ_JOBS:-2}" --target "${targets[@]}"
cd "$build"
for target in "${targets[@]}"; do
  mkdir -p "corpus-$target"
  flags=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1)
  # gRPC's process-wide state outlives each input: leaks there are not findings of the target.
  [ "$target" = rpc_fuzzer ] && flags+=(-detect_leaks=0)
  echo "run_fuzz: $target for ${seconds}s"
  "./$target" "${flags[@]}" "corpus-$target" "$here/corpus/$target"
done
