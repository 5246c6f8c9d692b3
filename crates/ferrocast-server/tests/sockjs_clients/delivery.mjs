// STOMP over SockJS with one forced transport, from Node.js or from a
// Chromium page, against two nodes on one Redis (FERROCAST_NODES):
//
//   node delivery.mjs node|chromium TRANSPORT
//
// The STOMP client (sockjs-client + @stomp/stompjs, unchanged) is on node 1:
// CONNECT, SUBSCRIBE with a receipt; a JSON WebSocket client (the ferrocast
// SDK) on node 2 publishes 1,000 numbered messages, which arrive exactly
// once, in order, with their positions; then a SEND with a receipt from the
// STOMP client reaches the JSON client. The session used the forced
// transport, never closed, and counts on node 1 as one `sockjs_stomp`
// connection. In Chromium the page comes from a static server on
// FERROCAST_STATIC_PORT, which the nodes' --sockjs-client-url points at (the
// iframe transports load sockjs-client from there).
import assert from "node:assert/strict";

import {
  assertExactlyOnceInOrder,
  connections,
  launchBrowser,
  nodeClient,
  nodes,
  openPage,
  publishNumbered,
  run,
  serveStatic,
  sleep,
  waitFor,
} from "../../../ferrocast-web/tests/browser/harness.mjs";
import { STATIC_ROOTS, nodeStomp, pageStomp, printReport, sockjsUrl } from "./clients.mjs";

const COUNT = 1000;
const [where, transport] = process.argv.slice(2);
assert.ok(["node", "chromium"].includes(where) && transport, "usage: node delivery.mjs node|chromium TRANSPORT");

run(`stompjs over SockJS ${transport} in ${where}`, async () => {
  const [a, b] = nodes();
  assert.ok(a && b, "two nodes in FERROCAST_NODES");
  const tag = `${transport}-${where}-${process.pid}-${Date.now()}`;
  const topic = `orders.sockjs-${tag}`;
  const cross = `orders.sockjs-cross-${tag}`;

  // Where the STOMP client runs.
  let stomp;
  let cleanup = async () => {};
  if (where === "node") {
    stomp = nodeStomp(sockjsUrl(a.public), transport);
  } else {
    const port = Number(process.env.FERROCAST_STATIC_PORT);
    assert.ok(port > 0, "FERROCAST_STATIC_PORT is set");
    const site = await serveStatic({ roots: STATIC_ROOTS, port });
    const browser = await launchBrowser();
    cleanup = async () => {
      await browser.close();
      site.close();
    };
    const page = await openPage(await browser.newContext(), `${site.origin}/sockjs-tests/pages/stomp.html`, "page");
    stomp = await pageStomp(page, sockjsUrl(a.public), transport);
  }

  const json = nodeClient(`ws://${b.public}/ws`);
  try {
    const fromStomp = [];
    await json.subscribe(cross, { message: (m) => fromStomp.push(m.data) }).ready();

    const connected = await stomp.call("connect");
    assert.equal(connected.version, "1.2", `CONNECTED ${JSON.stringify(connected)}`);
    const subscribed = await stomp.call("subscribe", topic);
    assert.match(subscribed["receipt-id"], /^sub-/, `RECEIPT ${JSON.stringify(subscribed)}`);
    assert.equal(await connections(a.admin, "sockjs_stomp"), 1, "node 1 counts the session as sockjs_stomp");

    await publishNumbered(json, topic, COUNT);
    await waitFor(async () => (await stomp.call("count", topic)) >= COUNT, `${COUNT} messages over ${transport}`, 60000);
    await sleep(500); // a duplicate would arrive now

    const sent = await stomp.call("send", cross, { n: 1, from: transport });
    assert.match(sent["receipt-id"], /^send-/, `RECEIPT ${JSON.stringify(sent)}`);
    await waitFor(() => fromStomp.length >= 1, "the STOMP client's SEND on the JSON client");

    const report = await stomp.call("report");
    assertExactlyOnceInOrder(report.numbers[topic], COUNT);
    assert.equal(report.positions[topic]?.offset, COUNT, "the last MESSAGE carries ferrocast-offset 1000");
    assert.deepEqual(fromStomp, [{ n: 1, from: transport }]);
    assert.deepEqual(report.transports, [transport], "one SockJS session, on the forced transport");
    assert.deepEqual(report.closes, [], "the session never closed");
    assert.deepEqual(report.errors, []);
    await stomp.call("close");
    await waitFor(async () => (await connections(a.admin, "sockjs_stomp")) === 0, "the session gone from node 1 after DISCONNECT");
    console.log(`${transport} in ${where}: ${COUNT} messages exactly once in order; SEND reached the JSON client`);
  } catch (error) {
    await printReport(stomp);
    throw error;
  } finally {
    json.disconnect();
    await cleanup();
  }
});
