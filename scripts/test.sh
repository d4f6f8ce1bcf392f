#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What CI runs: installs what is missing, checks formatting, runs the fuzzers for a bounded
# time, builds under ThreadSanitizer (the mailboxes), under AddressSanitizer and
# UndefinedBehaviorSanitizer (every test, ctest), then a GCC Release build (the unit and abuse
# tests again, memory measured without sanitizer overhead), its install into a staging tree and
# its .deb package. Warnings are errors here (HERALD_WERROR), never in a user's build.
# Environment: FUZZ_SECONDS (default 20 per harness; 0 skips the fuzz run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
jobs=$(nproc)
[ "$jobs" -le 2 ] || jobs=2

echo "== format check"
git ls-files '*.c' '*.h' | xargs -r clang-format --dry-run --Werror

echo "== fuzz (libFuzzer, ${FUZZ_SECONDS:-20}s per harness)"
if [ "${FUZZ_SECONDS:-20}" != 0 ] && ls tests/fuzz/fuzz_*.c >/dev/null 2>&1; then
    CC=clang cmake -S . -B build-fuzz -DHERALD_FUZZ=ON -DHERALD_WERROR=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build-fuzz -j"$jobs" >/dev/null
    failed=()
    for src in tests/fuzz/fuzz_*.c; do
        name=$(basename "$src" .c)
        corpus=tests/fuzz/corpus/${name#fuzz_}
        work=$(mktemp -d)
        out=$(mktemp)
        dict=(); [ -f "tests/fuzz/${name#fuzz_}.dict" ] && dict=(-dict="tests/fuzz/${name#fuzz_}.dict")
        echo "-- $name"
        # A failing run prints its whole report (the sanitizer's stack, the input) and where the
        # input that crashed was written; a passing one its final stats.
        if UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 build-fuzz/tests/"$name" "$work" "$corpus" \
            "${dict[@]}" -max_total_time="${FUZZ_SECONDS:-20}" -rss_limit_mb=2048 \
            -artifact_prefix=tests/fuzz/ -print_final_stats=1 >"$out" 2>&1; then
            tail -n 3 "$out"
        else
            cat "$out"
            artifact=$(grep -o "Test unit written to .*" "$out" | sed 's/^Test unit written to //' || true)
            echo "!! $name failed; input: ${artifact:-none written}" \
                "(replay: build-fuzz/tests/$name ${artifact:-INPUT})"
            failed+=("$name")
        fi
        rm -rf "$work" "$out"
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo "!! fuzzers failed: ${failed[*]}"
        exit 1
    fi
fi

echo "== ThreadSanitizer: the lock-free mailboxes"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DHERALD_TSAN=ON -DHERALD_WERROR=ON >/dev/null
cmake --build build-tsan -j"$jobs" --target test_mpsc >/dev/null
TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/test_mpsc

echo "== build (ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DHERALD_SANITIZE=ON -DHERALD_WERROR=ON >/dev/null
cmake --build build-asan -j"$jobs"
echo "== tests"
(
    cd build-asan
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
    ctest --output-on-failure -j2 --timeout 300
)

echo "== build (GCC Release, as users and packagers build)"
CC=gcc cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DHERALD_WERROR=ON >/dev/null
cmake --build build-release -j"$jobs"
echo "== unit and abuse tests (Release)"
(cd build-release && ctest --output-on-failure -j2 --timeout 300 -L 'unit|abuse')
