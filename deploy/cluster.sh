#!/usr/bin/env bash
# A local three-node ferrocast cluster on loopback, for trying clustering.
#
#   deploy/cluster.sh start [redis|nats]   start the backplane server and three nodes
#   deploy/cluster.sh status               show what runs and each node's /readyz
#   deploy/cluster.sh stop                 stop everything this script started
#
# Nodes:   ws://127.0.0.1:8080/ws  (admin 127.0.0.1:8081)
#          ws://127.0.0.1:8090/ws  (admin 127.0.0.1:8091)
#          ws://127.0.0.1:8100/ws  (admin 127.0.0.1:8101)
# Backplane: redis-server on 127.0.0.1:16379 or nats-server on 127.0.0.1:14222.
# HAProxy (when installed) in front of the three: ws://127.0.0.1:8070/ws, with
# deploy/haproxy/haproxy.cfg (stats on http://127.0.0.1:8404/stats).
# Binary: $FERROCAST_BIN, else target/release/ferrocast (built if missing).
# PIDs and logs: $FERROCAST_CLUSTER_DIR, else /tmp/ferrocast-cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${FERROCAST_CLUSTER_DIR:-/tmp/ferrocast-cluster}"
bin="${FERROCAST_BIN:-target/release/ferrocast}"
redis_port=16379
nats_port=14222
export PATH="$PATH:/usr/sbin"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1 after 10 s" >&2
  return 1
}

start() {
  local backend="${1:-redis}" url
  mkdir -p "$dir"
  if ls "$dir"/*.pid >/dev/null 2>&1; then
    echo "a cluster already runs from $dir; run '$0 stop' first" >&2
    exit 1
  fi
  if [ ! -x "$bin" ]; then
    cargo build --release -p ferrocast-server
  fi
  case "$backend" in
    redis)
      redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        >"$dir/redis.log" 2>&1 &
      echo $! >"$dir/redis.pid"
      wait_port "$redis_port"
      url="redis://127.0.0.1:$redis_port"
      ;;
    nats)
      nats-server -a 127.0.0.1 -p "$nats_port" >"$dir/nats.log" 2>&1 &
      echo $! >"$dir/nats.pid"
      wait_port "$nats_port"
      url="nats://127.0.0.1:$nats_port"
      ;;
    *)
      echo "usage: $0 start [redis|nats]" >&2
      exit 2
      ;;
  esac
  for i in 1 2 3; do
    local public=$((8070 + 10 * i)) admin=$((8071 + 10 * i)) grpc=$((50050 + i))
    "$bin" --node-id "node-$i" --backplane "$url" \
      --listen "127.0.0.1:$public" --admin-listen "127.0.0.1:$admin" \
      --grpc-listen "127.0.0.1:$grpc" \
      >"$dir/node-$i.log" 2>&1 &
    echo $! >"$dir/node-$i.pid"
    wait_port "$public"
    echo "node-$i: ws://127.0.0.1:$public/ws  admin http://127.0.0.1:$admin  gRPC 127.0.0.1:$grpc  (log $dir/node-$i.log)"
  done
  echo "backplane: $url"
  if command -v haproxy >/dev/null 2>&1; then
    # The shipped configuration, with loopback addresses for this cluster.
    sed -e 's/bind :8080/bind 127.0.0.1:8070/' -e 's/bind :8404/bind 127.0.0.1:8404/' \
      -e 's/ ferrocast-1:8080$/ 127.0.0.1:8080 check port 8081/' \
      -e 's/ ferrocast-2:8080$/ 127.0.0.1:8090 check port 8091/' \
      -e 's/ ferrocast-3:8080$/ 127.0.0.1:8100 check port 8101/' \
      deploy/haproxy/haproxy.cfg >"$dir/haproxy.cfg"
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    echo $! >"$dir/haproxy.pid"
    wait_port 8070
    echo "haproxy: ws://127.0.0.1:8070/ws  stats http://127.0.0.1:8404/stats  (log $dir/haproxy.log)"
  fi
}

status() {
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || { echo "no cluster runs from $dir"; return; }
    name=$(basename "$f" .pid)
    if running "$f"; then echo "$name: running (pid $(cat "$f"))"; else echo "$name: stopped"; fi
  done
  for i in 1 2 3; do
    local admin=$((8071 + 10 * i))
    printf 'node-%s /readyz: ' "$i"
    curl -s --max-time 2 "http://127.0.0.1:$admin/readyz" || echo "no answer"
  done
}

stop() {
  # The proxy, the nodes (they drain), then the backplane server.
  for f in "$dir"/haproxy.pid "$dir"/node-*.pid "$dir"/redis.pid "$dir"/nats.pid; do
    [ -e "$f" ] || continue
    if running "$f"; then
      pid=$(cat "$f")
      kill -TERM "$pid"
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$f"
  done
  echo "stopped"
}

case "${1:-}" in
  start) start "${2:-redis}" ;;
  status) status ;;
  stop) stop ;;
  *)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
