// Bytes on the wire and CPU of a JSON feed with and without permessage-deflate,
// measured with `ws`, which negotiates the extension as browsers do (its
// default offer: `permessage-deflate; client_max_window_bits`).
//
// One publisher sends realistic ~1 KiB JSON objects (an order with repeated
// keys) to one topic at --rate per second; --subscribers clients take them,
// offering compression or not (--compress on|off). Reported over --duration:
// bytes/s the subscribers read from their sockets, deliveries/s, the node's
// CPU (utime + stime of --node-pid from /proc) and the clients' own CPU.
//
// Usage: node feed.mjs --url ws://127.0.0.1:28080/ws --node-pid PID
//          [--subscribers 500] [--rate 200] [--duration 10] [--compress on|off]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import WebSocket from "ws";

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    "node-pid": { type: "string" },
    subscribers: { type: "string", default: "500" },
    rate: { type: "string", default: "200" },
    duration: { type: "string", default: "10" },
    compress: { type: "string", default: "on" },
  },
});
const url = values.url;
const nodePid = Number(values["node-pid"]);
if (!url || !nodePid) {
  console.error("usage: node feed.mjs --url ws://HOST:PORT/ws --node-pid PID [--subscribers N] [--rate R] [--duration S] [--compress on|off]");
  process.exit(2);
}
const subscribers = Number(values.subscribers);
const rate = Number(values.rate);
const duration = Number(values.duration);
const compress = values.compress === "on";
const topic = "feed.orders";

function order(n) {
  const lines = [];
  for (let i = 0; i < 8; i++) {
    lines.push({ sku: `SKU-${(n * 31 + i) % 997}`, quantity: (n + i) % 7, price: { amount: 1999 + i, currency: "EUR" }, warehouse: "north-east-2" });
  }
  return { n, kind: "order.updated", customer: { id: `c-${n % 100}`, tier: "gold" }, lines };
}

/** utime + stime of `pid`, in seconds (clock ticks of 10 ms). */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function open(compressed) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, "ferrocast.v1.json", { perMessageDeflate: compressed });
    socket.once("open", () => resolve(socket));
    socket.once("error", reject);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let delivered = 0;
const sockets = [];
for (let i = 0; i < subscribers; i++) {
  const socket = await open(compress);
  socket.on("message", (data) => {
    const text = data.toString();
    for (let at = text.indexOf('"op":"message"'); at >= 0; at = text.indexOf('"op":"message"', at + 1)) delivered++;
  });
  socket.send(JSON.stringify({ op: "subscribe", id: 1, topic }));
  sockets.push(socket);
}
const negotiated = sockets[0].extensions || "none";
const publisher = await open(false);
await sleep(500);

const bytesRead = () => sockets.reduce((sum, s) => sum + s._socket.bytesRead, 0);
let n = 0;
const sample = JSON.stringify(order(1)).length;
const interval = 1000 / rate;
const publish = () => publisher.send(JSON.stringify({ op: "publish", id: ++n, topic, data: order(n) }));
// Warm up for a second, then measure.
let timer = setInterval(publish, interval);
await sleep(1000);
const start = { bytes: bytesRead(), delivered, node: cpuSeconds(nodePid), client: process.cpuUsage(), at: performance.now() };
await sleep(duration * 1000);
const end = { bytes: bytesRead(), delivered, node: cpuSeconds(nodePid), client: process.cpuUsage(start.client), at: performance.now() };
clearInterval(timer);
const seconds = (end.at - start.at) / 1000;
const deliveries = (end.delivered - start.delivered) / seconds;
const bytes = (end.bytes - start.bytes) / seconds;
const nodeCpu = (end.node - start.node) / seconds;
const clientCpu = (end.client.user + end.client.system) / 1e6 / seconds;
console.log(
  [
    `feed: ${subscribers} subscribers (compression ${compress ? "offered" : "not offered"}; negotiated: ${negotiated}), ${rate} publications/s of ${sample} B JSON`,
    `  deliveries/s         ${deliveries.toFixed(0)}`,
    `  bytes/s on the wire  ${(bytes / 1e6).toFixed(2)} MB/s (${(bytes / deliveries).toFixed(0)} B per delivery)`,
    `  node CPU             ${(nodeCpu * 100).toFixed(1)} % of a core (${((nodeCpu / deliveries) * 1e6).toFixed(2)} µs per delivery)`,
    `  clients' CPU         ${(clientCpu * 100).toFixed(1)} % of a core`,
  ].join("\n"),
);
for (const socket of [...sockets, publisher]) socket.terminate();
timer = null;
process.exit(0);
