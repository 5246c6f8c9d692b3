#!/usr/bin/env bash
# The Socket.IO benchmark (docs/benchmarks.md, "Socket.IO: ferrocast against
# Socket.IO 4.8 with the Redis adapter"): two ferrocast nodes on one Redis,
# then two Socket.IO 4.8 servers with the Redis adapter on another Redis,
# each driven by the same generator (bench/load.mjs), one after the other on
# the same machine.
#
#   cargo build --release -p ferrocast-server
#   npm ci --prefix crates/ferrocast-server/tests/socketio_clients
#   crates/ferrocast-server/tests/socketio_clients/bench/run.sh [RATE ...]
#
# Environment: FERROCAST (the binary, default target/release/ferrocast),
# SUBSCRIBERS, TOPICS, SECONDS, IDLE (passed to load.mjs). Memory per idle
# connection is measured with the first rate only, on fresh processes: a
# process that served load keeps memory it no longer uses.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../../../.." && pwd)"
ferrocast="${FERROCAST:-$root/target/release/ferrocast}"
rates=("${@:-200}")
idle="${IDLE:-2000}"

# Runs load.mjs at every rate against TARGETS, memory with the first only.
measure() {
  local label=$1 targets=$2 pids=$3 first=1
  for rate in "${rates[@]}"; do
    echo "== $label ($targets), rate $rate/s"
    TARGETS="$targets" PIDS="$pids" RATE="$rate" IDLE="$([ $first = 1 ] && echo "$idle" || echo 0)" node "$here/load.mjs"
    first=0
  done
}
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "nothing on port $1" >&2; exit 1; }

redis_port=$(free_port)
redis-server --port "$redis_port" --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port"

printf 'publish_rate = 0\nsubscribe_rate = 0\n' >"$work/node.toml"
targets=()
node_pids=()
for name in a b; do
  port=$(free_port)
  "$ferrocast" --node-id "$name" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:0" --grpc-listen "127.0.0.1:0" \
    --backplane "redis://127.0.0.1:$redis_port" --config "$work/node.toml" --log-filter warn >"$work/ferrocast-$name.log" 2>&1 &
  pids+=($!)
  node_pids+=($!)
  targets+=("127.0.0.1:$port")
done
for t in "${targets[@]}"; do wait_port "${t##*:}"; done
measure ferrocast "$(IFS=,; echo "${targets[*]}")" "$(IFS=,; echo "${node_pids[*]}")"

targets=()
sio_pids=()
for name in a b; do
  port=$(free_port)
  PORT="$port" REDIS="redis://127.0.0.1:$redis_port" node "$here/server.mjs" >"$work/socketio-$name.log" 2>&1 &
  pids+=($!)
  sio_pids+=($!)
  targets+=("127.0.0.1:$port")
done
for t in "${targets[@]}"; do wait_port "${t##*:}"; done
measure "Socket.IO 4.8 + Redis adapter" "$(IFS=,; echo "${targets[*]}")" "$(IFS=,; echo "${sio_pids[*]}")"
