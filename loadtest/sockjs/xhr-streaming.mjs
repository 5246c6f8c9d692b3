// SockJS xhr-streaming under load, with Node.js alone (no dependencies):
// SESSIONS sessions, each subscribed (JSON protocol inside SockJS) to one of
// TOPICS topics, PUBLISH_RATE publications/s through POST /publish for
// SECONDS; prints deliveries/s and latency percentiles as one JSON line.
//
// With RELAY_VIA set (host:port of another node), each session is created on
// the first node (a poll) and then streamed through RELAY_VIA, so every frame
// crosses the backplane from the owner to the node that serves the
// response; sends are measured on both nodes (SEND_PROBES round trips each).
//
//   NODE=127.0.0.1:8080 SESSIONS=1000 TOPICS=10 PUBLISH_RATE=200 SECONDS=20 \
//     node loadtest/sockjs/xhr-streaming.mjs
import http from "node:http";
import { randomBytes } from "node:crypto";

const env = (name, fallback) => process.env[name] ?? fallback;
const NODE = env("NODE", "127.0.0.1:8080");
const RELAY_VIA = env("RELAY_VIA", "");
const PREFIX = env("PREFIX", "/sockjs");
const SESSIONS = Number(env("SESSIONS", 1000));
const TOPICS = Number(env("TOPICS", 10));
const PUBLISH_RATE = Number(env("PUBLISH_RATE", 200));
const SECONDS = Number(env("SECONDS", 20));
const SEND_PROBES = Number(env("SEND_PROBES", 200));

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const streamAgent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const now = () => Number(process.hrtime.bigint()) / 1e6;

function request(host, method, path, body, contentType = "text/plain") {
  const [hostname, port] = host.split(":");
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, method, path, agent, headers: body ? { "content-type": contentType } : {} }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode, text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

const latencies = [];
let deliveries = 0;
let measuring = false;

/** Opens a streaming response on `host` for session `path` and counts what it carries. */
function stream(host, path) {
  const [hostname, port] = host.split(":");
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, method: "POST", path: `${path}/xhr_streaming`, agent: streamAgent }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`${path}: ${res.statusCode}`));
      res.setEncoding("utf8");
      let buffer = "";
      let opened = false;
      res.on("data", (chunk) => {
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf("\n")) !== -1) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 1);
          if (frame === "o" && !opened) {
            opened = true;
            resolve(res);
          } else if (frame.startsWith("a[")) {
            for (const message of JSON.parse(frame.slice(1))) {
              for (const line of message.split("\n")) {
                const object = JSON.parse(line);
                if (object.op === "message" && measuring) {
                  deliveries += 1;
                  latencies.push(now() - object.data.t);
                }
              }
            }
          } else if (frame.startsWith("c[")) {
            console.error(`${path}: closed ${frame}`);
          }
        }
      });
      // A session made by a poll first (RELAY_VIA) gets no second "o".
      if (RELAY_VIA) resolve(res);
    });
    req.on("error", reject);
    req.end();
  });
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

async function sendRoundTrips(host, path) {
  const times = [];
  for (let i = 0; i < SEND_PROBES; i++) {
    const started = now();
    const answer = await request(host, "POST", `${path}/xhr_send`, JSON.stringify([JSON.stringify({ op: "ping" })]));
    if (answer.status !== 204) throw new Error(`xhr_send on ${host}: ${answer.status} ${answer.text}`);
    times.push(now() - started);
  }
  times.sort((a, b) => a - b);
  return { p50: +percentile(times, 50).toFixed(3), p99: +percentile(times, 99).toFixed(3) };
}

const sessions = [];
for (let i = 0; i < SESSIONS; i++) {
  const path = `${PREFIX}/${String(i % 1000).padStart(3, "0")}/${randomBytes(8).toString("hex")}`;
  if (RELAY_VIA) {
    const first = await request(NODE, "POST", `${path}/xhr`); // creates it on NODE: "o"
    if (first.text.trim() !== "o") throw new Error(`${path}: ${first.status} ${first.text}`);
  }
  const response = await stream(RELAY_VIA || NODE, path);
  const topic = `bench.t${i % TOPICS}`;
  const sent = await request(NODE, "POST", `${path}/xhr_send`, JSON.stringify([JSON.stringify({ op: "subscribe", id: 1, topic })]));
  if (sent.status !== 204) throw new Error(`subscribe ${path}: ${sent.status} ${sent.text}`);
  sessions.push({ path, response });
}
await new Promise((r) => setTimeout(r, 1000));

let sendCost = null;
if (RELAY_VIA) {
  sendCost = { owner: await sendRoundTrips(NODE, sessions[0].path), other_node: await sendRoundTrips(RELAY_VIA, sessions[0].path) };
}

measuring = true;
const started = now();
let published = 0;
const interval = 1000 / PUBLISH_RATE;
while (now() - started < SECONDS * 1000) {
  const due = Math.floor((now() - started) / interval);
  const batch = [];
  while (published < due) {
    const topic = `bench.t${published % TOPICS}`;
    batch.push(request(NODE, "POST", "/publish", JSON.stringify({ topic, data: { t: now(), n: published } }), "application/json"));
    published += 1;
  }
  await Promise.all(batch);
  await new Promise((r) => setTimeout(r, 2));
}
await new Promise((r) => setTimeout(r, 1000));
measuring = false;
const elapsed = (now() - started) / 1000;
latencies.sort((a, b) => a - b);
const expected = published * (SESSIONS / TOPICS);
console.log(
  JSON.stringify({
    sessions: SESSIONS,
    topics: TOPICS,
    relayed: Boolean(RELAY_VIA),
    published,
    deliveries,
    expected_deliveries: expected,
    deliveries_per_s: Math.round(deliveries / elapsed),
    latency_ms: { p50: +percentile(latencies, 50).toFixed(2), p99: +percentile(latencies, 99).toFixed(2), max: +latencies.at(-1).toFixed(2) },
    xhr_send_ms: sendCost,
  }),
);
for (const { response } of sessions) response.destroy();
process.exit(0);
