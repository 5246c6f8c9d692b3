// permessage-deflate with the clients that offer it: Node.js `ws` (its
// default offer) and Chromium (its own default offer, unchanged). One node
// (started with the default --ws-compression, 256 bytes), a JSON feed of
// realistic 1 KiB objects:
// - a compressing and a plain subscriber get the same messages, the
//   compressing one for a fraction of the bytes;
// - what a client sends compressed is inflated (a 2 KiB publication from
//   each client reaches the others intact);
// - a message that inflates beyond --max-message-size (a decompression bomb,
//   1 MiB of one character in ~1 KiB) is refused with 1009 and counted, and
//   the other clients go on.
import assert from "node:assert/strict";

import WebSocket from "ws";

import { launchBrowser, metricSum, nodes, openPage, run, serveStatic, waitFor } from "./harness.mjs";

const FEED = 200;

/** A JSON object of about 1 KiB whose keys repeat, as application feeds do. */
function order(n) {
  const lines = [];
  for (let i = 0; lines.length < 8; i++) {
    lines.push({ sku: `SKU-${(n * 31 + i) % 997}`, quantity: (n + i) % 7, price: { amount: 1999 + i, currency: "EUR" }, warehouse: "north-east-2" });
  }
  return { n, kind: "order.updated", customer: { id: `c-${n % 100}`, tier: "gold" }, lines };
}

/** A raw JSON-protocol client over `ws`, with or without permessage-deflate. */
async function rawClient(url, compress) {
  const socket = new WebSocket(url, "ferrocast.v1.json", { perMessageDeflate: compress });
  await new Promise((resolve, reject) => {
    socket.once("open", resolve);
    socket.once("error", reject);
  });
  const client = { socket, messages: [], replies: [], closed: null };
  socket.on("message", (data) => {
    for (const line of data.toString().split("\n")) {
      const frame = JSON.parse(line);
      (frame.op === "message" ? client.messages : client.replies).push(frame);
    }
  });
  socket.on("close", (code, reason) => (client.closed = { code, reason: reason.toString() }));
  return client;
}

async function subscribe(client, topic) {
  client.socket.send(JSON.stringify({ op: "subscribe", id: 1, topic }));
  await waitFor(() => client.replies.some((r) => r.op === "ok" && r.id === 1), `subscribed to ${topic}`);
}

run("compression", async () => {
  const [node] = nodes();
  const url = `ws://${node.public}/ws`;
  const topic = "feed.orders";

  const zipped = await rawClient(url, true);
  const plain = await rawClient(url, false);
  const publisher = await rawClient(url, true);
  assert.equal(zipped.socket.extensions, "permessage-deflate", "ws negotiated permessage-deflate");
  assert.equal(plain.socket.extensions, "", "a client that does not offer it gets none");
  await subscribe(zipped, topic);
  await subscribe(plain, topic);

  // Chromium: a page with a raw WebSocket (what the SDK opens), its default offer.
  const site = await serveStatic();
  const browser = await launchBrowser();
  try {
    const page = await openPage(await browser.newContext(), `${site.origin}/pages/sdk.html`, "page");
    const extensions = await page.evaluate(async ({ url, topic }) => {
      const socket = (window.socket = new WebSocket(url, "ferrocast.v1.json"));
      window.got = [];
      socket.onmessage = (event) => {
        for (const line of event.data.split("\n")) {
          const frame = JSON.parse(line);
          if (frame.op === "message") window.got.push(frame.data);
        }
      };
      await new Promise((resolve) => (socket.onopen = resolve));
      socket.send(JSON.stringify({ op: "subscribe", id: 1, topic }));
      return socket.extensions;
    }, { url, topic });
    assert.match(extensions, /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/, "Chromium negotiated it");
    await page.waitForTimeout(200);

    const before = { zipped: zipped.socket._socket.bytesRead, plain: plain.socket._socket.bytesRead };
    for (let n = 1; n <= FEED; n++) {
      publisher.socket.send(JSON.stringify({ op: "publish", id: 1000 + n, topic, data: order(n) }));
    }
    await waitFor(() => zipped.messages.length >= FEED && plain.messages.length >= FEED, `${FEED} messages on both Node.js subscribers`);
    await waitFor(() => page.evaluate((count) => window.got.length >= count, FEED), `${FEED} messages in Chromium`);
    const bytes = { zipped: zipped.socket._socket.bytesRead - before.zipped, plain: plain.socket._socket.bytesRead - before.plain };
    const expected = Array.from({ length: FEED }, (_, i) => order(i + 1));
    assert.deepEqual(zipped.messages.map((m) => m.data), expected, "compressed deliveries inflate to the publications");
    assert.deepEqual(plain.messages.map((m) => m.data), expected);
    assert.deepEqual(await page.evaluate(() => window.got), expected, "Chromium inflates them too");
    const raw = JSON.stringify(order(1)).length;
    console.log(`compression: ${FEED} messages of ~${raw} B: ${bytes.plain} B plain, ${bytes.zipped} B compressed (${(bytes.plain / bytes.zipped).toFixed(1)}×)`);
    assert.ok(bytes.zipped * 2.5 < bytes.plain, `compressed ${bytes.zipped} B should be under 40 % of ${bytes.plain} B`);

    // Compressed client messages: 2 KiB from Chromium, and from ws (which
    // compresses from 1 KiB), reach the plain subscriber intact.
    const big = "x".repeat(2048);
    await page.evaluate(({ topic, big }) => window.socket.send(JSON.stringify({ op: "publish", id: 9, topic, data: { from: "chromium", big } })), { topic, big });
    publisher.socket.send(JSON.stringify({ op: "publish", id: 10, topic, data: { from: "ws", big } }));
    await waitFor(() => plain.messages.length >= FEED + 2, "the two compressed publications");
    assert.deepEqual(plain.messages.slice(FEED).map((m) => m.data.from).sort(), ["chromium", "ws"]);
    assert.ok(plain.messages.slice(FEED).every((m) => m.data.big === big));

    // A decompression bomb: 1 MiB that deflates to ~1 KiB, over the 64 KiB limit.
    const bombsBefore = await metricSum(node.admin, "ferrocast_limit_hits_total", 'limit="inflated_size"');
    publisher.socket.send(JSON.stringify({ op: "publish", id: 11, topic, data: "0".repeat(1 << 20) }));
    await waitFor(() => publisher.closed, "the node to close the bomb's connection");
    assert.equal(publisher.closed.code, 1009, `closed with ${JSON.stringify(publisher.closed)}`);
    assert.equal(await metricSum(node.admin, "ferrocast_limit_hits_total", 'limit="inflated_size"'), bombsBefore + 1, "the bomb is counted");
    // The others are untouched: one more publication reaches all of them.
    await page.evaluate((topic) => window.socket.send(JSON.stringify({ op: "publish", id: 12, topic, data: "after" })), topic);
    await waitFor(() => zipped.messages.at(-1)?.data === "after" && plain.messages.at(-1)?.data === "after", "a publication after the bomb");
    assert.equal(zipped.closed, null);
    assert.equal(plain.closed, null);
  } finally {
    await browser.close();
    site.close();
    for (const c of [zipped, plain, publisher]) c.socket.terminate();
  }
});
