#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/smoke.sh HERALD HERALD_BENCH: the ctest smoke run of herald-bench (seconds, not a
# benchmark). Starts herald on a loopback port it picks (port 0, read from its "listening on"
# line: no free-port probe to race with other tests) with 2 workers (ws_client_publish on, for
# chat), runs every delivering scenario at a tiny size: fan-out over SSE (HTTP/1.1 and HTTP/2
# streams), long poll and WebSocket, notify over WebSocket and SSE (both), chat (with typing and
# churn too), publish single and in batches, the kernel floor (herald-bench's own server: its
# subscribers must connect); then a
# redis-server (on a unix socket in a temporary directory, again nothing to race for) and two
# herald nodes sharing it with a publish_key, and fan-out, notify and chat spread over both
# with --key (and a publish without it refused). Fails unless each exits 0
# (herald-bench exits 1 when a message is lost or a connection fails), and unless every herald
# still runs at the end and exits 0 on SIGTERM. A /ws/ handshake that does not answer 101 fails
# the run, saying what it got. Stops only the processes it started, by PID.
set -u
herald=$1
bench=$2
dir=$(mktemp -d)
log=$dir/herald.log
pids=()
heralds=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$dir"
}
trap cleanup EXIT
# start_herald LOG ARGS...: herald on 127.0.0.1:0 with ARGS, its log in LOG; sets $pid, and $port
# from its "listening on" line, waiting up to 20 s for "ready" (a sanitizer build on a loaded
# machine starts slowly). Fails at once if herald exits.
start_herald() {
    local out=$1 line
    "$herald" -c /dev/null -o 'listen 127.0.0.1:0' -o 'workers 2' -o 'log_level info' \
        "${@:2}" >"$out" 2>&1 &
    pid=$!
    pids+=("$pid")
    heralds+=("$pid")
    port=
    for _ in $(seq 1 400); do
        line=$(grep -m1 -o 'listening on 127\.0\.0\.1:[0-9]*' "$out")
        if [ -n "$line" ] && grep -q ' ready$' "$out"; then
            port=${line##*:}
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "== herald (${*:2}) did not become ready:"
    cat "$out"
    return 1
}
failed=0
start_herald "$log" -o 'ws_client_publish on' || failed=1
run() {
    echo "== herald-bench fanout -t $1 $2"
    # shellcheck disable=SC2086
    "$bench" fanout --url "http://127.0.0.1:$port" --server-pid "$pid" -t "$1" $2 \
        --duration 2s --drain 3s --settle 200ms --quiet
}
# run_sc SCENARIO ARGS...: one more scenario against the single node, 1 s of publishing
run_sc() {
    echo "== herald-bench $*"
    "$bench" "$1" --url "http://127.0.0.1:$port" --server-pid "$pid" --duration 1s --drain 3s \
        --settle 200ms --quiet "${@:2}"
}
run sse "-s 50 -c 5 -r 100" || failed=1
run sse "-s 50 -c 5 -r 100 --h2-streams 20" || failed=1
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
run_sc notify -t ws -s 40 -p 4 -r 200 || failed=1
run_sc notify -t sse -s 40 -p 4 -r 200 || failed=1
run_sc notify -t sse -s 40 -p 4 -r 200 --h2-streams 10 || failed=1
# 2 msg/s per room as in the real scenario: a room's messages leave from different members, so
# their order at the server holds only while they are further apart than the server's delay
run_sc chat -s 40 -c 4 -r 8 --duration 2s || failed=1
# chat with typing (ephemeral publishes) and members leaving and joining again (no messages:
# a member out of its room misses them)
run_sc chat -s 40 -c 4 -r 0 --typing 5 --churn 20 --duration 2s || failed=1
run_sc publish -p 2 -c 20 || failed=1
run_sc publish -p 2 -c 20 --batch 100 || failed=1
# the kernel floor: the bench's own server; every subscriber must connect to it (it once
# connected to the default --url instead, and the floor was refused in every run)
echo "== herald-bench floor"
"$bench" floor -s 50 -c 1 -r 100 -n 64 --source-addrs 4 --duration 1s --drain 3s \
    --settle 200ms --quiet || failed=1
# kick: every subscriber of one channel ended by one POST /admin/disconnect (exit 1 otherwise)
for t in sse ws; do
    echo "== herald-bench kick -t $t"
    "$bench" kick --url "http://127.0.0.1:$port" --server-pid "$pid" -t $t -s 50 \
        --settle 200ms --quiet || failed=1
done

# two nodes over one Redis: subscribers and publishers spread over both, CPU summed over all;
# the nodes want a publish key (as a node reached from elsewhere would), given with --key
if ! command -v redis-server >/dev/null; then
    echo "== two nodes: redis-server is missing (scripts/deps.sh test installs it)"
    failed=1
else
    sock=$dir/redis.sock
    redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --save '' \
        --appendonly no >"$log.redis" 2>&1 &
    rpid=$!
    pids+=("$rpid")
    for _ in $(seq 1 400); do
        [ "$(redis-cli -s "$sock" ping 2>/dev/null)" = PONG ] && break
        sleep 0.05
    done
    [ "$(redis-cli -s "$sock" ping 2>/dev/null)" = PONG ] ||
        { echo "== redis-server does not answer on $sock after 20 s"; failed=1; }
    nodes=() urls=()
    for n in 1 2; do
        start_herald "$log.node$n" -o "redis unix://$sock" -o 'publish_key smoke-key' \
            -o 'ws_client_publish on' || failed=1
        nodes+=("$pid")
        urls+=(--url "http://127.0.0.1:$port")
    done
    spids="${nodes[0]},${nodes[1]},$rpid"
    for sc in "fanout -t ws -s 40 -c 2 -p 2 -r 100" "notify -t ws -s 40 -p 4 -r 200" \
        "chat -s 40 -c 4 -r 8"; do
        echo "== herald-bench $sc --key (2 nodes, one Redis)"
        # shellcheck disable=SC2086
        "$bench" $sc "${urls[@]}" --server-pid "$spids" --duration 1s --drain 3s \
            --settle 200ms --quiet --key smoke-key || failed=1
    done
    # without the key every publish is refused, and herald-bench says so (exit 1)
    "$bench" publish "${urls[@]}" -p 1 -c 2 --duration 1s --drain 1s --quiet >/dev/null 2>&1
    [ $? -eq 1 ] || { echo "== publish without --key to keyed nodes did not exit 1"; failed=1; }
fi

# every herald still runs (one that exited early fails the run, whatever herald-bench saw) and
# stops cleanly
for p in "${heralds[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
        wait "$p"
        echo "== herald (pid $p) exited with status $? before the end of the run"
        failed=1
        continue
    fi
    kill -TERM "$p"
    wait "$p"
    status=$?
    [ $status -eq 0 ] || { echo "== herald (pid $p) exited with status $status on SIGTERM"; failed=1; }
done

# bad arguments must be refused with exit 2
"$bench" fanout --rate -1 >/dev/null 2>&1
[ $? -eq 2 ] || { echo "bad arguments did not exit 2"; failed=1; }
"$bench" publish --target nchan --batch 10 >/dev/null 2>&1
[ $? -eq 2 ] || { echo "--batch against nchan did not exit 2"; failed=1; }
"$bench" publish --key "two words" >/dev/null 2>&1
[ $? -eq 2 ] || { echo "--key with a space did not exit 2"; failed=1; }
"$bench" chat -t sse >/dev/null 2>&1
[ $? -eq 2 ] || { echo "chat over SSE did not exit 2"; failed=1; }
"$bench" kick -t longpoll >/dev/null 2>&1
[ $? -eq 2 ] || { echo "kick over long poll did not exit 2"; failed=1; }
# --help documents every scenario
for sc in fanout idle connect publish floor notify chat kick; do
    "$bench" --help | grep -q "^  $sc " || { echo "--help does not document $sc"; failed=1; }
done
if [ $failed -ne 0 ]; then
    for f in "$dir"/*.log*; do
        [ -s "$f" ] && { echo "--- $f"; cat "$f"; }
    done
    exit 1
fi
echo "bench smoke: ok"
