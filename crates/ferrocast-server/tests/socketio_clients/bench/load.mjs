// The Socket.IO benchmark's load generator: socket.io-client 4.8 over
// WebSocket against two servers (ferrocast nodes, or Socket.IO servers
// with the Redis adapter: bench/server.mjs), the same events for both.
//
// 1. Memory per idle connection: IDLE sockets, each subscribed to a topic
//    of its own, spread over both servers; the servers' resident memory
//    (VmRSS of PIDS) before and after, divided by IDLE.
// 2. Fan-out: SUBSCRIBERS sockets spread over both servers, each in one of
//    TOPICS rooms; one publisher socket on the first server publishes RATE
//    publications/s for SECONDS, each stamped with its send time; every
//    delivery's latency (publish → event in this process) is recorded.
//    Half the subscribers are on the other server: their deliveries cross
//    Redis.
//
// Prints one JSON line: deliveries/s, latency percentiles, lost, memory,
// and the servers' CPU during the fan-out.
//
//   TARGETS=127.0.0.1:8080,127.0.0.1:8082 PIDS=123,456 node bench/load.mjs
import { readFile } from "node:fs/promises";

import { io } from "socket.io-client";

const env = (name, fallback) => process.env[name] ?? fallback;
const TARGETS = env("TARGETS", "127.0.0.1:8080,127.0.0.1:8082").split(",");
const PIDS = env("PIDS", "").split(",").filter(Boolean).map(Number);
const IDLE = Number(env("IDLE", 2000));
const SUBSCRIBERS = Number(env("SUBSCRIBERS", 500));
const TOPICS = Number(env("TOPICS", 10));
const RATE = Number(env("RATE", 200));
const SECONDS = Number(env("SECONDS", 10));
const PAD = "x".repeat(Number(env("PAYLOAD", 100)));
const tag = `${process.pid}-${Date.now()}`;

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function rss(pid) {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024;
}

const totalRss = async () => (await Promise.all(PIDS.map(rss))).reduce((a, b) => a + b, 0);

/** CPU seconds (user + system) the servers used so far: /proc/PID/stat, 100 ticks/s. */
async function cpuSeconds() {
  let ticks = 0;
  for (const pid of PIDS) {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / 100;
}

/** A socket to `target`, connected. */
function connect(target) {
  const socket = io(`http://${target}`, { transports: ["websocket"], reconnection: false });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

/** `count` connected sockets, spread over the targets, `batch` at a time. */
async function open(count, batch = 100) {
  const sockets = [];
  for (let i = 0; i < count; i += batch) {
    const n = Math.min(batch, count - i);
    sockets.push(...(await Promise.all(Array.from({ length: n }, (_, j) => connect(TARGETS[(i + j) % TARGETS.length])))));
  }
  return sockets;
}

async function idleMemory() {
  if (!PIDS.length || !IDLE) return null;
  await sleep(1000);
  const before = await totalRss();
  const sockets = await open(IDLE);
  await Promise.all(sockets.map((s, i) => s.timeout(10000).emitWithAck("subscribe", `idle.t${i}-${tag}`)));
  await sleep(3000);
  const after = await totalRss();
  for (const s of sockets) s.disconnect();
  await sleep(1000);
  return { connections: IDLE, bytes_per_connection: Math.round((after - before) / IDLE) };
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : null;
}

async function fanOut() {
  const latencies = [];
  const sockets = await open(SUBSCRIBERS);
  await Promise.all(
    sockets.map((s, i) => {
      s.on("message", (data) => latencies.push(now() - data.t));
      return s.timeout(10000).emitWithAck("subscribe", `bench.t${i % TOPICS}-${tag}`);
    }),
  );
  const publisher = await connect(TARGETS[0]);
  await sleep(500);
  const sent = RATE * SECONDS;
  const cpuBefore = PIDS.length ? await cpuSeconds() : 0;
  const started = now();
  const interval = 1000 / RATE;
  let acked = 0;
  for (let k = 0; k < sent; k++) {
    const due = started + k * interval;
    const wait = due - now();
    if (wait > 1) await sleep(wait);
    publisher.emit("publish", `bench.t${k % TOPICS}-${tag}`, { t: now(), k, pad: PAD }, () => acked++);
  }
  const expected = (sent * SUBSCRIBERS) / TOPICS;
  const deadline = now() + 15000;
  while (latencies.length < expected && now() < deadline) await sleep(100);
  const elapsed = (now() - started) / 1000;
  const cpu = PIDS.length ? (await cpuSeconds()) - cpuBefore : null;
  latencies.sort((a, b) => a - b);
  for (const s of [...sockets, publisher]) s.disconnect();
  return {
    publications: sent,
    acked,
    expected_deliveries: expected,
    delivered: latencies.length,
    lost: expected - latencies.length,
    deliveries_per_second: Math.round(latencies.length / elapsed),
    // Both servers together, in % of one core over the run.
    server_cpu_percent: cpu === null ? null : Math.round((100 * cpu) / elapsed),
    latency_ms: {
      p50: percentile(latencies, 50)?.toFixed(1),
      p99: percentile(latencies, 99)?.toFixed(1),
      p999: percentile(latencies, 99.9)?.toFixed(1),
      max: latencies.at(-1)?.toFixed(1),
    },
  };
}

const memory = await idleMemory();
const delivery = await fanOut();
console.log(JSON.stringify({ targets: TARGETS, subscribers: SUBSCRIBERS, topics: TOPICS, rate: RATE, seconds: SECONDS, memory, ...delivery }));
process.exit(0);
