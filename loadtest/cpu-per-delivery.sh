#!/usr/bin/env bash
# CPU per delivery at 200k deliveries/s (1,000 subscribers, 10 topics, 2,000
# publishes/s of 128 B on one node, in-memory backplane), for each of the given
# ferrocast binaries and node arguments, alternated in one run (the machine is
# shared and noisy: only figures of one run compare). For 8 s in the middle of
# each 15 s run, `perf stat` counts the node's CPU time (task-clock) and its
# system calls by tracepoint (this VM has no hardware counters); the generator
# reports latency and losses.
#
# Usage: loadtest/cpu-per-delivery.sh ROUNDS OUT_DIR NAME=BINARY[,NODE_ARG...] ...
#   e.g. loadtest/cpu-per-delivery.sh 2 /tmp/cpu before=OLD/ferrocast \
#          after=NEW/ferrocast paced=NEW/ferrocast,--write-interval,20ms
# Env:   LOADTEST (default target/release/ferrocast-loadtest): one generator for all.
# Needs perf (Debian: linux-perf) and permission to trace the node.
# Prints one line per run: the node's CPU per delivery and per write (sendto),
# writes per delivery, futex and epoll_wait calls, and the generator's
# publish → delivery p50 / p99 and losses.
set -euo pipefail
# shellcheck source=loadtest/node-ready.sh
. "$(dirname "$0")/node-ready.sh"

rounds=${1:?usage: cpu-per-delivery.sh ROUNDS OUT_DIR NAME=BINARY[,NODE_ARG...]...}
out=${2:?usage: cpu-per-delivery.sh ROUNDS OUT_DIR NAME=BINARY[,NODE_ARG...]...}
shift 2
[ $# -ge 1 ] || { echo "give at least one NAME=BINARY" >&2; exit 2; }
loadtest=${LOADTEST:-target/release/ferrocast-loadtest}
command -v perf >/dev/null || { echo "perf not found (Debian: apt-get install linux-perf)" >&2; exit 2; }
mkdir -p "$out"
ulimit -n 20000

# 8 s at 200,000 deliveries/s.
window_deliveries=1600000
node=
cleanup() {
  if [ -n "$node" ]; then
    kill "$node" 2>/dev/null || true
    wait "$node" 2>/dev/null || true
  fi
}
trap cleanup EXIT

for round in $(seq 1 "$rounds"); do
  for spec in "$@"; do
    name=${spec%%=*}
    IFS=, read -r -a node_command <<<"${spec#*=}"
    run="$out/$name-$round"
    "${node_command[@]}" --listen 127.0.0.1:29080 --admin-listen 127.0.0.1:29081 \
      --grpc-listen 127.0.0.1:29082 --log-filter error --publish-rate 0 \
      --max-connections 20000 >"$run.node.log" 2>&1 &
    node=$!
    wait_ready 29081
    "$loadtest" fanout --url ws://127.0.0.1:29080/ws --node-pid "$node" --subscribers 1000 \
      --topics 10 --publishers 10 --rate 2000 --payload-bytes 128 --duration 15s \
      --warmup 2s >"$run.loadtest.txt" 2>&1 &
    generator=$!
    # Setup takes about 1 s and the warm-up 2 s: count 8 s of the measured 15.
    sleep 6
    perf stat -x, -p "$node" -e raw_syscalls:sys_enter,syscalls:sys_enter_sendto \
      -e syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait,task-clock \
      -- sleep 8 2>"$run.perf.csv"
    wait "$generator" || true
    cleanup
    node=
    latency=$(awk '/latency p50/{p50=$3} /latency p99 /{p99=$3} /deliveries lost/{lost=$3}
      END{printf "p50 %s  p99 %s ms  lost %s", p50, p99, lost}' "$run.loadtest.txt")
    awk -F, -v name="$name" -v round="$round" -v d="$window_deliveries" -v latency="$latency" '
      /task-clock/{cpu=$1} /sys_enter_sendto/{sends=$1} /futex/{futex=$1} /epoll_wait/{epoll=$1}
      END{printf "%-10s round %s: CPU/delivery %.2f us  CPU/write %.2f us  writes/delivery %.2f  futex %d  epoll_wait %d  %s\n",
        name, round, cpu*1000/d, cpu*1000/sends, sends/d, futex, epoll, latency}' "$run.perf.csv"
  done
done
