#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/chat.sh HERALD HERALD_BENCH [--rounds N] [--members S] [--rooms C] [--duration D]
#               [--churn N] [--workers W] [--setups "off on churn churn0"] [--herald-b HERALD2]
#               [--presence-hold D]
# Issue 11's bars for chat, measured in alternating rounds (docs/chat.md, "Cost"):
#   off     herald-bench chat: C rooms of S/C members on /ws, 2 msg/s per room; no presence
#           rule (channel_rule without presence=on), no typing
#   on      the same with presence=on on the rooms, every member asking join/leave events
#           (--presence) and 5 typing (ephemeral) publishes per second per room (--typing 5)
#   churn   presence on, no messages: N members a second leave their room and join it again
#           (unsubscribe, subscribe with presence), server CPU per join or leave; presence_hold
#           is the default (2s with a leading edge since 2026-12-03 evening; 250ms before, and 0
#           before that: older churn figures are those)
#   churn0  the same churn on rooms without presence: what a subscribe/unsubscribe costs alone
#   churnh  churn with presence_hold D (--presence-hold, default 1s): the joins and leaves of a
#           hold go to each member in one frame
#   onh     on with presence_hold D
# --setups runs only those, in that order in each round; a setup named SETUP@b runs with the
# binary of --herald-b (two builds compared in alternating rounds of one run). Each round
# starts its own herald (port 0, read from its "listening on" line) with the conf
# of its setup, runs herald-bench with --server-pid, stops herald with SIGTERM. Prints
# herald-bench's JSON line per round (prefixed with the setup and the 1-minute load average)
# and a summary of medians. Stops only what it started, by PID; every wait is bounded.
set -u
herald=$1
bench=$2
shift 2
rounds=3
members=5000
rooms=500
duration=20s
churn=1000
workers=2
setups="off on churn churn0"
herald_b=
hold=1s
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) rounds=$2; shift ;;
    --members) members=$2; shift ;;
    --rooms) rooms=$2; shift ;;
    --duration) duration=$2; shift ;;
    --churn) churn=$2; shift ;;
    --workers) workers=$2; shift ;;
    --setups) setups=$2; shift ;;
    --herald-b) herald_b=$2; shift ;;
    --presence-hold) hold=$2; shift ;;
    *) echo "chat.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
dir=$(mktemp -d)
hpid=
cleanup() {
    if [ -n "$hpid" ]; then
        kill "$hpid" 2>/dev/null
        wait "$hpid" 2>/dev/null
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null

# conf FILE PRESENCE(on|off|hold)
write_conf() {
    local rule="channel_rule cb* subscribe=any publish=subscriber" hold_line=
    [ "$2" != off ] && rule="$rule presence=on"
    [ "$2" = hold ] && hold_line="presence_hold $hold"
    cat >"$1" <<EOF
listen 127.0.0.1:0
workers $workers
log_level info
max_connections 15000
max_connections_per_ip 0
connect_rate_per_ip 0
ws_client_publish on
ephemeral_rate 20
history_size 100
$hold_line
$rule
EOF
}

# start_herald PRESENCE BINARY
start_herald() {
    write_conf "$dir/herald.conf" "$1"
    : >"$dir/herald.log"
    "$2" -c "$dir/herald.conf" 2>"$dir/herald.log" &
    hpid=$!
    port=
    for _ in $(seq 1 200); do
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/herald.log" | head -1)
        [ -n "$port" ] && return 0
        sleep 0.05
    done
    echo "chat.sh: herald did not start"; cat "$dir/herald.log"; return 1
}

stop_herald() {
    kill "$hpid" 2>/dev/null
    for _ in $(seq 1 200); do
        kill -0 "$hpid" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$hpid" 2>/dev/null
    wait "$hpid" 2>/dev/null
    hpid=
}

# run SETUP
run() {
    local setup=$1 presence=off args=() bin=$herald
    if [ "${setup%@b}" != "$setup" ]; then
        [ -n "$herald_b" ] || { echo "chat.sh: $setup needs --herald-b" >&2; return 1; }
        bin=$herald_b
    fi
    case ${setup%@b} in
    off) args=(-r $((rooms * 2))) ;;
    on) presence=on; args=(-r $((rooms * 2)) --typing 5 --presence) ;;
    churn) presence=on; args=(-r 0 --churn "$churn" --presence) ;;
    churn0) args=(-r 0 --churn "$churn") ;;
    churnh) presence=hold; args=(-r 0 --churn "$churn" --presence) ;;
    onh) presence=hold; args=(-r $((rooms * 2)) --typing 5 --presence) ;;
    esac
    start_herald $presence "$bin" || return 1
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    local out
    out=$(timeout 300 "$bench" chat --url "http://127.0.0.1:$port" --server-pid "$hpid" \
        -s "$members" -c "$rooms" -d "$duration" --drain 3s --settle 1s --prefix "cb$RANDOM" \
        --json --quiet "${args[@]}")
    echo "$setup load=$load $out"
    stop_herald
}

for _ in $(seq 1 "$rounds"); do
    for setup in $setups; do
        run $setup | tee -a "$dir/results"
    done
done

python3 - "$dir/results" <<'EOF'
import json, statistics, sys
by = {}
for line in open(sys.argv[1]):
    setup, load, js = line.split(" ", 2)
    try:
        j = json.loads(js)
    except ValueError:
        continue
    by.setdefault(setup, []).append((float(load.split("=")[1]), j))
def med(setup, key):
    v = [j.get(key) for _, j in by.get(setup, []) if isinstance(j.get(key), (int, float))]
    return (statistics.median(v), v) if v else (float("nan"), v)
for setup in [s for s in ("off", "on", "onh") if s in by]:
    anyd, anys = med(setup, "server_cpu_us_per_any_delivery")
    if anys:
        print("%-6s CPU/delivery, events counted: median %.2f us %s" % (setup, anyd, anys))
    cpu, all_ = med(setup, "server_cpu_us_per_delivery")
    p99, p99s = med(setup, "latency_p99_us")
    lost, _ = med(setup, "lost")
    print("%-6s CPU/delivery median %.2f us %s  p99 median %.0f us %s  lost %s  load %s" % (
        setup, cpu, all_, p99, p99s, lost, [l for l, _ in by.get(setup, [])]))
for setup in [s for s in by if s.endswith("@b")]:
    for key in ("server_cpu_us_per_delivery", "server_cpu_us_per_any_delivery",
                "server_cpu_us_per_join_leave", "latency_p99_us"):
        v, all_ = med(setup, key)
        if all_:
            print("%-9s %s median %.2f %s" % (setup, key, v, all_))
for setup in [s for s in ("churn", "churnh", "churn0") if s in by]:
    cpu, all_ = med(setup, "server_cpu_us_per_join_leave")
    print("%-6s CPU/join or leave median %.2f us %s  load %s" % (
        setup, cpu, all_, [l for l, _ in by.get(setup, [])]))
if "on" not in by or "off" not in by:
    sys.exit(0)
on, _ = med("on", "server_cpu_us_per_delivery")
off, _ = med("off", "server_cpu_us_per_delivery")
anyon, _ = med("on", "server_cpu_us_per_any_delivery")
print("on/off CPU per message delivery: %.2fx; per delivery, events counted: %.2fx (bar: 1.5x)"
      % (on / off, anyon / off))
EOF
