#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/soak.sh HERALD HERALD_BENCH [--redis [--volatile]] [--restart-every SECONDS] [--keep DIR]
#               [-- herald-bench soak options...]
# Runs `herald-bench soak` against a herald it starts itself on a loopback port (port 0, read
# from its "listening on" line), with the conf below printed at the start. With --redis, a
# redis-server of its own on a unix socket in a temporary directory (appendonly yes, so a
# restart keeps every acknowledged message) that it restarts every --restart-every seconds
# (default 120: SIGTERM, wait, start again on the same socket and data) for as long as the
# soak runs. --volatile: a Redis without persistence, whose restarts lose history (the soak
# must then see acknowledged messages lost: a test of the soak itself). Exits with herald-bench's status, or 1 when herald did not survive to the end or
# did not exit 0 on SIGTERM. Stops only the processes it started, by PID; every wait is
# bounded. --keep DIR copies herald's log (and Redis's) there.
set -u
herald=$1
bench=$2
shift 2
use_redis=0
appendonly=yes
restart_every=120
keep=
while [ $# -gt 0 ]; do
    case $1 in
    --redis) use_redis=1 ;;
    --volatile) appendonly=no ;;
    --restart-every) restart_every=$2; shift ;;
    --keep) keep=$2; shift ;;
    --) shift; break ;;
    *) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
dir=$(mktemp -d)
hpid=
loop_pid=
cleanup() {
    [ -n "$loop_pid" ] && kill "$loop_pid" 2>/dev/null && wait "$loop_pid" 2>/dev/null
    [ -n "$hpid" ] && kill "$hpid" 2>/dev/null && wait "$hpid" 2>/dev/null
    # Redis writes its AOF and its log until it exits: wait (bounded) before removing $dir
    if [ -f "$dir/redis.pid" ]; then
        rpid=$(cat "$dir/redis.pid")
        kill "$rpid" 2>/dev/null
        for _ in $(seq 1 200); do kill -0 "$rpid" 2>/dev/null || break; sleep 0.05; done
    fi
    if [ -n "$keep" ]; then
        mkdir -p "$keep" && cp "$dir"/*.log "$keep"/ 2>/dev/null
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
# herald needs a descriptor per connection: 15,000 subscribers and their churn
ulimit -n "$(ulimit -Hn)" 2>/dev/null

start_redis() {
    redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --dir "$dir" \
        --appendonly $appendonly --appendfsync everysec --save '' --daemonize no \
        --logfile "$dir/redis.log" &
    echo $! >"$dir/redis.pid"
    for _ in $(seq 1 200); do
        [ -S "$dir/redis.sock" ] && redis-cli -s "$dir/redis.sock" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "soak.sh: redis-server did not start"; cat "$dir/redis.log"; return 1
}

conf=$dir/herald.conf
cat >"$conf" <<EOF
listen 127.0.0.1:0
workers 2
log_level info
max_connections 19000
history_size 2000
history_max_bytes 16m
history_ttl 60s
max_queue_bytes 64k
longpoll_max_timeout 120s
EOF
if [ "$use_redis" = 1 ]; then
    command -v redis-server >/dev/null || { echo "soak.sh: redis-server is missing (scripts/deps.sh installs it)"; exit 1; }
    start_redis || exit 1
    echo "redis unix://$dir/redis.sock" >>"$conf"
fi
echo "== herald conf:"
sed 's/^/    /' "$conf"
"$herald" -c "$conf" >"$dir/herald.log" 2>&1 &
hpid=$!
port=
for _ in $(seq 1 400); do
    line=$(grep -m1 -o 'listening on 127\.0\.0\.1:[0-9]*' "$dir/herald.log")
    if [ -n "$line" ] && grep -q ' ready$' "$dir/herald.log"; then
        port=${line##*:}
        break
    fi
    kill -0 "$hpid" 2>/dev/null || break
    sleep 0.05
done
if [ -z "$port" ]; then
    echo "soak.sh: herald did not become ready:"; cat "$dir/herald.log"; exit 1
fi

if [ "$use_redis" = 1 ]; then
    # the restart loop: a child of this script; each redis-server it starts is its own child,
    # found again through redis.pid (SIGTERM: Redis writes its AOF and exits)
    (
        trap 'exit 0' TERM
        while :; do
            sleep "$restart_every" & wait $!
            p=$(cat "$dir/redis.pid")
            echo "== $(date -u +%H:%M:%S) restarting redis-server (pid $p)"
            kill -TERM "$p" 2>/dev/null
            for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
            kill -0 "$p" 2>/dev/null && { echo "soak.sh: redis-server $p did not stop"; exit 1; }
            start_redis || exit 1
        done
    ) &
    loop_pid=$!
fi

echo "== herald-bench soak --url http://127.0.0.1:$port --server-pid $hpid $*"
"$bench" soak --url "http://127.0.0.1:$port" --server-pid "$hpid" "$@"
rc=$?
if [ -n "$loop_pid" ]; then
    kill "$loop_pid" 2>/dev/null
    wait "$loop_pid" 2>/dev/null
    loop_pid=
fi
if ! kill -0 "$hpid" 2>/dev/null; then
    echo "soak.sh: herald exited during the soak:"; tail -n 30 "$dir/herald.log"; exit 1
fi
kill -TERM "$hpid"
for _ in $(seq 1 300); do kill -0 "$hpid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$hpid" 2>/dev/null; then
    echo "soak.sh: herald did not stop within 15 s of SIGTERM"; kill -KILL "$hpid"; rc=1
else
    wait "$hpid"
    hrc=$?
    hpid=
    if [ "$hrc" != 0 ]; then
        echo "soak.sh: herald exited $hrc on SIGTERM:"; tail -n 30 "$dir/herald.log"; rc=1
    fi
fi
if [ "$rc" != 0 ]; then
    echo "== herald log (tail):"; tail -n 20 "$dir/herald.log"
fi
exit "$rc"
