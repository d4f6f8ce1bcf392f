#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages herald needs, only those missing (idempotent).
#   scripts/deps.sh build   what building and running herald needs
#   scripts/deps.sh test    that, plus what the test suite needs (and its npm clients: ws,
#                           eventsource, from package-lock.json into node_modules/)
set -euo pipefail
mode=${1:-build}
want=(build-essential cmake pkg-config libuv1-dev node-llhttp libwslay-dev libssl-dev
      libhiredis-dev libjansson-dev libjwt-dev libnghttp2-dev)
if [ "$mode" = test ]; then
    want+=(clang libclang-rt-14-dev clang-format curl openssl python3 python3-websockets
           redis-server nodejs npm chromium groff-base
           python3-jwt python3-prometheus-client haproxy nghttp2-client python3-h2)
fi
missing=()
for p in "${want[@]}"; do
    # A Node.js build that bundles npm (and conflicts with Debian's npm) serves as both.
    case $p in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
    esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
[ "$mode" = test ] || exit 0

# The npm clients of the integration tests, when node_modules is missing or older than the lock.
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$root/package.json" ]; then
    lock=$root/package-lock.json
    stamp=$root/node_modules/.package-lock.json
    if [ ! -d "$root/node_modules" ] || { [ -f "$lock" ] && [ "$lock" -nt "$stamp" ]; }; then
        echo "deps: npm packages for the tests"
        if [ -f "$lock" ]; then
            (cd "$root" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        else
            (cd "$root" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
        fi
    fi
fi
