# Sourced by the comparison scripts: wait_ready ADMIN_PORT waits up to 10 s
# for the node whose admin listener is on that port to answer /readyz, and
# exits the script if it does not.
wait_ready() {
  for _ in $(seq 1 100); do
    if curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; then
      return
    fi
    sleep 0.1
  done
  echo "node on admin port $1 did not become ready" >&2
  exit 1
}
