#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/connect_auth.sh HERALD HERALD_BENCH [ROUNDS] [COUNT]
# Issue 10's connect bar (bench/benchmarks-notes.md, "Connect with a JWT"): the server CPU of a
# connect without auth, with HS256 and with ES256 tokens, each both as a first use (every
# connection its own token: --tokens FILE of COUNT fresh tokens, minted per round so that no
# round finds the previous one's in the cache) and as a reuse (every connection the same token:
# the verified-token cache answers all but the first). Three nodes (workers 1: every sample is
# one loop) run side by side; the five setups run one after the other in each of ROUNDS rounds
# (default 5) of COUNT WebSocket connects (default 10,000, 32 at a time), so a change in the
# machine's load hits every setup alike. Prints each run, then the medians and their ratio to
# auth off, with the 1-minute load average before each round. Tokens: bench/mint_tokens.py
# (python3-jwt), an ES256 key made by openssl. Stops only what it started, by PID.
set -u
herald=$1
bench=$2
rounds=${3:-5}
count=${4:-10000}
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3 # Debian's, with python3-jwt (a python3 earlier in PATH may lack it)
dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$dir"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null
secret='bench-secret-0123456789abcdef0123456789'
openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ec.key" 2>/dev/null
openssl ec -in "$dir/ec.key" -pubout -out "$dir/ec.pub" 2>/dev/null

start() { # NAME EXTRA_CONF: starts a node, sets port_NAME and pid_NAME
    printf 'listen 127.0.0.1:0\nworkers 1\nlog_level info\nmax_connections 19000\n%b' "$2" \
        >"$dir/$1.conf"
    "$herald" -c "$dir/$1.conf" >"$dir/$1.log" 2>&1 &
    local pid=$! port=
    pids+=("$pid")
    for _ in $(seq 1 400); do
        line=$(grep -m1 -o 'listening on 127\.0\.0\.1:[0-9]*' "$dir/$1.log")
        if [ -n "$line" ] && grep -q ' ready$' "$dir/$1.log"; then
            port=${line##*:}
            break
        fi
        sleep 0.05
    done
    [ -n "$port" ] || { echo "herald $1 did not start:"; cat "$dir/$1.log"; exit 1; }
    eval "port_$1=$port pid_$1=$pid"
}
start off ''
start hs "auth_jwt_secret $secret\nchannel_rule * subscribe=grant\n"
start es "auth_jwt_public_key $dir/ec.pub\nchannel_rule * subscribe=grant\n"
"$py" "$here/mint_tokens.py" --alg HS256 --secret "$secret" >"$dir/hs.one"
"$py" "$here/mint_tokens.py" --alg ES256 --key "$dir/ec.key" >"$dir/es.one"

run() { # LABEL NODE [bench options]: appends "LABEL us_per_connection rate" to results
    local label=$1 node=$2
    shift 2
    local port pid out
    port=$(eval echo "\$port_$node")
    pid=$(eval echo "\$pid_$node")
    out=$("$bench" connect -t ws --count "$count" --concurrency 32 --json -q \
        --url "http://127.0.0.1:$port" --server-pid "$pid" "$@")
    echo "$out" | "$py" -c '
import json, sys
label = sys.argv[1]
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
ok = r["ok"] and r["subscribed"] == r["planned"]
print("%s %.2f %.0f %s" % (label, r["server_cpu_us_per_connection"], r["rate"],
                           "ok" if ok else "FAILED"))' "$label" | tee -a "$dir/results"
}

echo "== $(date -u +%FT%TZ) $rounds rounds of $count connects; $(nproc) cores"
for r in $(seq 1 "$rounds"); do
    "$py" "$here/mint_tokens.py" --alg HS256 --secret "$secret" --count "$count" \
        >"$dir/hs.many"
    "$py" "$here/mint_tokens.py" --alg ES256 --key "$dir/ec.key" --count "$count" \
        >"$dir/es.many"
    echo "== round $r, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "load $(cut -d' ' -f1 /proc/loadavg)" >>"$dir/results"
    run off off
    run hs256-first hs --tokens "$dir/hs.many"
    run hs256-reuse hs --tokens "$dir/hs.one"
    run es256-first es --tokens "$dir/es.many"
    run es256-reuse es --tokens "$dir/es.one"
done
echo "== medians (us of server CPU per connection; x auth off); load average per round"
"$py" - "$dir/results" <<'EOF'
import statistics, sys
runs, loads = {}, []
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "load":
        loads.append(float(f[1]))
    else:
        runs.setdefault(f[0], []).append((float(f[1]), float(f[2]), f[3]))
base = statistics.median(v[0] for v in runs["off"])
for k, v in runs.items():
    m = statistics.median(x[0] for x in v)
    # Also each round against auth off in the same round: slow drifts of the load cancel.
    paired = statistics.median(x[0] / o[0] for x, o in zip(v, runs["off"]))
    print("%-12s %s  median %.1f us  %.2fx  (paired by round %.2fx)  %.0f connects/s%s" % (
        k, " ".join("%.1f" % x[0] for x in v), m, m / base, paired,
        statistics.median(x[1] for x in v),
        "" if all(x[2] == "ok" for x in v) else "  (a run FAILED)"))
print("load average (1 min) at each round: %s" % ", ".join("%.1f" % x for x in loads))
EOF
