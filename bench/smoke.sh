#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/smoke.sh HERALD HERALD_BENCH: the ctest smoke run of herald-bench (a few seconds, not a
# benchmark). Starts herald on a free loopback port with 2 workers, runs a tiny fan-out over
# SSE, long poll and WebSocket, and fails unless each exits 0 (herald-bench exits 1 when a
# message is lost or a connection fails). A /ws/ handshake that does not answer 101 fails the
# run, saying what it got. Stops only the herald it started.
set -u
herald=$1
bench=$2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$herald" -c /dev/null -o "listen 127.0.0.1:$port" -o 'workers 2' -o 'log_level warn' >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
done
run() {
    echo "== herald-bench fanout -t $1 $2"
    # shellcheck disable=SC2086
    "$bench" fanout --url "http://127.0.0.1:$port" --server-pid "$pid" -t "$1" $2 \
        --duration 2s --drain 3s --settle 200ms --quiet
}
failed=0
run sse "-s 50 -c 5 -r 100" || failed=1
run longpoll "-s 20 -c 2 -r 50" || failed=1
ws_status=$(python3 - "$port" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"GET /ws/smoke HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
print(s.recv(64).split(b" ")[1].decode())
PY
)
if [ "$ws_status" != 101 ]; then
    echo "== ws: the handshake on /ws/smoke answered '$ws_status', not 101"
    failed=1
else
    run ws "-s 50 -c 5 -r 100" || failed=1
fi
# bad arguments must be refused with exit 2
"$bench" fanout --rate -1 >/dev/null 2>&1
[ $? -eq 2 ] || { echo "bad arguments did not exit 2"; failed=1; }
if [ $failed -ne 0 ]; then
    echo "--- herald log"; cat "$log"
    exit 1
fi
echo "bench smoke: ok"
