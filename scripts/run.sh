#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what is missing, builds herald, and runs it in the foreground on conf/herald.conf.
# Extra arguments go to herald, e.g.: scripts/run.sh -o 'listen 127.0.0.1:9000'
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target herald
exec build/herald -c conf/herald.conf "$@"
