#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what is missing, checks formatting, builds under AddressSanitizer and
# UndefinedBehaviorSanitizer, runs the fuzzers for a bounded time, then every test (ctest).
# Environment: FUZZ_SECONDS (default 20 per harness; 0 skips the fuzz run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test

echo "== format check"
git ls-files '*.c' '*.h' | xargs -r clang-format --dry-run --Werror

echo "== fuzz (libFuzzer, ${FUZZ_SECONDS:-20}s per harness)"
if [ "${FUZZ_SECONDS:-20}" != 0 ] && ls tests/fuzz/fuzz_*.c >/dev/null 2>&1; then
    CC=clang cmake -S . -B build-fuzz -DHERALD_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build-fuzz -j"$(nproc)" >/dev/null
    for src in tests/fuzz/fuzz_*.c; do
        name=$(basename "$src" .c)
        corpus=tests/fuzz/corpus/${name#fuzz_}
        work=$(mktemp -d)
        dict=(); [ -f "tests/fuzz/${name#fuzz_}.dict" ] && dict=(-dict="tests/fuzz/${name#fuzz_}.dict")
        echo "-- $name"
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 build-fuzz/tests/"$name" "$work" "$corpus" "${dict[@]}" -max_total_time="${FUZZ_SECONDS:-20}" \
            -rss_limit_mb=2048 -artifact_prefix=tests/fuzz/ -print_final_stats=1 2>&1 | tail -n 3
        rm -rf "$work"
    done
fi

echo "== ThreadSanitizer: the lock-free mailboxes"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DHERALD_TSAN=ON >/dev/null
cmake --build build-tsan -j"$(nproc)" --target test_mpsc >/dev/null
TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/test_mpsc

echo "== build (ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DHERALD_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$(nproc)"
echo "== tests"
cd build-asan
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
ctest --output-on-failure -j2 --timeout 300
