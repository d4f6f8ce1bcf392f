#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages herald needs, only those missing (idempotent).
#   scripts/deps.sh build   what building and running herald needs
#   scripts/deps.sh test    that, plus what the test suite needs
set -euo pipefail
want=(build-essential cmake pkg-config libuv1-dev node-llhttp libwslay-dev libssl-dev
      libhiredis-dev libjansson-dev)
if [ "${1:-build}" = test ]; then
    want+=(clang libclang-rt-14-dev clang-format curl openssl python3 python3-websockets
           redis-server)
fi
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
