#!/usr/bin/env bash
# Runs the same scenarios against two ferrocast binaries, alternating them in
# one run (the machine is shared and noisy: only figures of one run compare):
#   burst   2,000 messages of 128 B to 1,000 subscribers of one topic
#   load    1,000 subscribers, 10 topics, 2,000 publishes/s of 128 B (200k deliveries/s)
#   idle    15,000 subscribed connections held 20 s: RSS per connection
# Each scenario gets a fresh node on the memory backplane.
#
# Usage: loadtest/compare-nodes.sh OLD_BINARY NEW_BINARY [ROUNDS] [OUT_DIR]
# Env:   LOADTEST (default target/release/ferrocast-loadtest): one generator for both.
# Writes each run's report to OUT_DIR (default /tmp/ferrocast-compare) and
# prints the summary tables.
set -euo pipefail
# shellcheck source=loadtest/node-ready.sh
. "$(dirname "$0")/node-ready.sh"

old=${1:?usage: compare-nodes.sh OLD_BINARY NEW_BINARY [ROUNDS] [OUT_DIR]}
new=${2:?usage: compare-nodes.sh OLD_BINARY NEW_BINARY [ROUNDS] [OUT_DIR]}
rounds=${3:-2}
out=${4:-/tmp/ferrocast-compare}
loadtest=${LOADTEST:-target/release/ferrocast-loadtest}
port=28080
url="ws://127.0.0.1:$port/ws"
mkdir -p "$out"
ulimit -n 20000

node=""
stop_node() {
  if [ -n "$node" ]; then
    kill "$node" 2>/dev/null || true
    wait "$node" 2>/dev/null || true
    node=""
  fi
}
trap stop_node EXIT

start_node() {
  "$1" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((port + 1))" \
    --grpc-listen "127.0.0.1:$((port + 2))" --log-filter warn --publish-rate 0 \
    --max-connections 20000 &
  node=$!
  wait_ready $((port + 1))
}

run() {
  local which=$1 binary=$2 scenario=$3 round=$4
  shift 4
  start_node "$binary"
  local file="$out/$scenario-$which-$round.txt"
  "$loadtest" "$@" --node-pid "$node" >"$file" 2>&1 || echo "(exit $?)" >>"$file"
  if [ "$scenario" = load ]; then
    curl -s "http://127.0.0.1:$((port + 1))/metrics" |
      grep -E '^ferrocast_delivery_lag_seconds_(sum|count)' >>"$file" || true
  fi
  stop_node
  echo "== $scenario $which round $round"
  cat "$file"
}

for round in $(seq 1 "$rounds"); do
  for pair in "old:$old" "new:$new"; do
    which=${pair%%:*}
    binary=${pair#*:}
    run "$which" "$binary" burst "$round" fanout --url "$url" \
      --subscribers 1000 --topics 1 --publishers 1 --burst 2000 --payload-bytes 128
    run "$which" "$binary" load "$round" fanout --url "$url" \
      --subscribers 1000 --topics 10 --publishers 10 --rate 2000 --payload-bytes 128 \
      --duration 15s --warmup 2s
    run "$which" "$binary" idle "$round" idle --url "$url" \
      --connections 15000 --topics 10 --duration 20s --workers 2
  done
done
