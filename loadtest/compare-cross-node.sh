#!/usr/bin/env bash
# Runs the cross-node scenario (publishers on one node, 1,000 subscribers on
# another, 10 topics, 2,000 publishes/s of 128 B = 200k deliveries/s) through
# Redis and through NATS, for each of the given ferrocast binaries, alternating
# them in one run (the machine is shared and noisy: only figures of one run
# compare). Each run gets fresh nodes; the backplane servers stay up.
#
# Usage: loadtest/compare-cross-node.sh ROUNDS OUT_DIR NAME=BINARY [NAME=BINARY ...]
# Env:   LOADTEST (default target/release/ferrocast-loadtest): one generator for all.
#        BACKPLANES (default "redis nats"), SECONDS_PER_RUN (measured seconds, default 15).
# Needs redis-server and nats-server on PATH (Debian: /usr/sbin for nats-server).
# Prints one line per run: binary, backplane, round, publish → delivery p50 / p99 /
# p99.9 and losses as the generator saw them, the nodes' CPU, the subscribers'
# node's mean lag from accepting a publication (on the other node) to writing
# it, and the publishers' node's mean backplane publish time.
set -euo pipefail
# shellcheck source=loadtest/node-ready.sh
. "$(dirname "$0")/node-ready.sh"

rounds=${1:?usage: compare-cross-node.sh ROUNDS OUT_DIR NAME=BINARY...}
out=${2:?usage: compare-cross-node.sh ROUNDS OUT_DIR NAME=BINARY...}
shift 2
[ $# -ge 1 ] || { echo "give at least one NAME=BINARY" >&2; exit 2; }
loadtest=${LOADTEST:-target/release/ferrocast-loadtest}
backplanes=${BACKPLANES:-redis nats}
seconds=${SECONDS_PER_RUN:-15}
mkdir -p "$out"
ulimit -n 20000

redis_port=16379
nats_port=14222
pids=()
nodes=()
cleanup() {
  for pid in "${nodes[@]}" "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --loglevel warning >"$out/redis.log" 2>&1 &
pids+=($!)
nats-server -a 127.0.0.1 -p "$nats_port" >"$out/nats.log" 2>&1 &
pids+=($!)
sleep 1

start_nodes() {
  local binary=$1 backplane=$2
  nodes=()
  for port in 18080 18090; do
    "$binary" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((port + 1))" \
      --grpc-listen "127.0.0.1:$((port + 2))" --backplane "$backplane" \
      --node-id "n$port" --log-filter warn --publish-rate 0 >>"$out/node-$port.log" 2>&1 &
    nodes+=($!)
  done
  wait_ready 18081
  wait_ready 18091
}

stop_nodes() {
  for pid in "${nodes[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  nodes=()
}

for round in $(seq 1 "$rounds"); do
  for pair in "$@"; do
    name=${pair%%=*}
    binary=${pair#*=}
    for backplane in $backplanes; do
      case $backplane in
        redis) url="redis://127.0.0.1:$redis_port" ;;
        nats) url="nats://127.0.0.1:$nats_port" ;;
        *) echo "unknown backplane $backplane" >&2; exit 2 ;;
      esac
      start_nodes "$binary" "$url"
      file="$out/$name-$backplane-$round.json"
      "$loadtest" cross-node --pub-url ws://127.0.0.1:18080/ws --sub-url ws://127.0.0.1:18090/ws \
        --subscribers 1000 --topics 10 --publishers 10 --rate 2000 --payload-bytes 128 \
        --duration "${seconds}s" --warmup 2s --json --quiet \
        --node-pid "${nodes[0]}" --node-pid "${nodes[1]}" >"$file" || echo "(exit $?)" >&2
      # The subscribers' node's lag from accepting a publication (on the
      # publishers' node) to writing it, and the publishers' node's backplane
      # publish time: where the backplane's share of the latency shows.
      curl -s http://127.0.0.1:18091/metrics | grep -E '^ferrocast_delivery_lag_seconds' >"$file.lag" || true
      curl -s http://127.0.0.1:18081/metrics |
        grep -E '^ferrocast_backplane_publish_duration_seconds' >"$file.publish" || true
      stop_nodes
      python3 - "$file" "$name" "$backplane" "$round" <<'EOF'
import json, sys
path, name, backplane, rnd = sys.argv[1:]
r = json.load(open(path))
l = r["latency"]
cpu = [round(n.get("cpu_percent") or 0) for n in r["nodes"]["nodes"]]

def mean_ms(file, name):
    values = {}
    for line in open(file):
        key, _, value = line.rpartition(" ")
        values[key.split("{")[0]] = values.get(key.split("{")[0], 0) + float(value)
    count = values.get(name + "_count", 0)
    return values.get(name + "_sum", 0) * 1000 / count if count else float("nan")

lag = mean_ms(path + ".lag", "ferrocast_delivery_lag_seconds")
publish = mean_ms(path + ".publish", "ferrocast_backplane_publish_duration_seconds")
print(f"{name:8} {backplane:6} round {rnd}: p50 {l['p50_ms']:.2f}  p99 {l['p99_ms']:.2f}  "
      f"p99.9 {l['p999_ms']:.2f} ms  lost {r['lost']}  node CPU % {cpu}  "
      f"subscribers' node lag mean {lag:.2f} ms  backplane publish mean {publish:.2f} ms")
EOF
    done
  done
done
