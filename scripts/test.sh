#!/usr/bin/env bash
# Runs every test on a fresh Debian 12 machine: installs the Debian packages, builds
# twice (plain RelWithDebInfo, and AddressSanitizer + UndefinedBehaviorSanitizer),
# fetches OpenSearch from Maven Central, brings the real local stack up in a temporary
# directory, runs ctest in both builds, runs the decoder's libFuzzer target for 60 s
# (PGDERIVE_FUZZ_SECONDS), and brings the stack down even on failure.
# Prints the wall time of each phase. Exit status: ctest's.
#
#   scripts/test.sh [-L LABEL | -LE LABEL ...]   extra arguments go to ctest
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

phases=()
phase() {  # phase NAME COMMAND...: runs and times one phase
  local name=$1 t0 t1
  shift
  echo "=== $name" >&2
  t0=$(date +%s%3N)
  "$@"
  t1=$(date +%s%3N)
  phases+=("$(printf '%-26s %7.1f s' "$name" "$(echo "($t1 - $t0) / 1000" | bc -l)")")
}
summary() {
  echo "=== phase times" >&2
  for p in "${phases[@]}"; do echo "  $p" >&2; done
}

build() {  # build DIR CMAKE_ARGS...
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -Wno-dev "$@" > /dev/null
  ninja -C "$dir"
}

stack_dir=$(mktemp -d /tmp/pgderive-test.XXXXXX)
cleanup() {
  local code=$?
  compose/local/stack down "$stack_dir" || true
  rm -rf "$stack_dir"
  summary
  exit $code
}
trap cleanup EXIT

phase "install packages" scripts/install-deps.sh
phase "maven fetch (opensearch)" compose/local/stack fetch "$stack_dir"
phase "build (RelWithDebInfo)" build build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo
phase "build (asan+ubsan)" build build/asan -DCMAKE_BUILD_TYPE=Debug -DPGDERIVE_SANITIZE=ON
fuzz_build() {
  CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -Wno-dev -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPGDERIVE_FUZZ=ON -DPGDERIVE_BUILD_TESTS=OFF > /dev/null
  ninja -C build/fuzz pgoutput_fuzz copy_text_fuzz
}
phase "build (fuzz, clang)" fuzz_build
rm -rf build/fuzz/run build/fuzz/run-copy
phase "fuzz decoder (${PGDERIVE_FUZZ_SECONDS:-60} s)" \
  tests/fuzz/run.sh build/fuzz/tests/fuzz/pgoutput_fuzz "${PGDERIVE_FUZZ_SECONDS:-60}" build/fuzz/run
phase "fuzz COPY row parser (${PGDERIVE_FUZZ_COPY_SECONDS:-20} s)" \
  tests/fuzz/run.sh build/fuzz/tests/fuzz/copy_text_fuzz "${PGDERIVE_FUZZ_COPY_SECONDS:-20}" build/fuzz/run-copy
phase "stack up" compose/local/stack up "$stack_dir"
export PGDERIVE_STACK_ENV="$stack_dir/stack.env"

# Sanitizers: any finding fails the test. Leak checking is on (ASan's default).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# A known leak inside libpqxx 6.4 on a broken connection (tests/lsan.supp says why).
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp}
phase "tests (RelWithDebInfo)" ctest --test-dir build/release --output-on-failure -j2 "$@"
phase "tests (asan+ubsan)" ctest --test-dir build/asan --output-on-failure -j2 "$@"
