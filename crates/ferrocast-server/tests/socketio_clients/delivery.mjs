// socket.io-client 4.8, unchanged, with forced Engine.IO transports, from
// Node.js or from a Chromium page, against two nodes on one Redis
// (FERROCAST_NODES):
//
//   node delivery.mjs node|chromium TRANSPORTS      (websocket | polling | polling,websocket)
//
// The Socket.IO client is on node 1: it subscribes (ack with the position);
// a JSON WebSocket client (the ferrocast SDK) on node 2 publishes 1,000
// numbered messages, which arrive exactly once, in order, as `message`
// events with their topic and position. Then the Socket.IO client publishes
// JSON and binary data, which reach the JSON client (the binary as base64
// with its media type), each acknowledged with its position. The socket
// used the transports asked for (with `polling,websocket`: it upgraded),
// never disconnected, and counts on node 1 as one `socketio` connection.
import assert from "node:assert/strict";

import {
  assertExactlyOnceInOrder,
  connections,
  nodeClient,
  nodes,
  publishNumbered,
  run,
  sleep,
  waitFor,
} from "../../../ferrocast-web/tests/browser/harness.mjs";
import { printReport, startClient } from "./clients.mjs";

const COUNT = 1000;
const [where, transportList] = process.argv.slice(2);
assert.ok(["node", "chromium"].includes(where) && transportList, "usage: node delivery.mjs node|chromium TRANSPORTS");
const transports = transportList.split(",");

run(`socket.io-client over ${transportList} in ${where}`, async () => {
  const [a, b] = nodes();
  assert.ok(a && b, "two nodes in FERROCAST_NODES");
  const tag = `${transports.join("-")}-${where}-${process.pid}-${Date.now()}`;
  const topic = `orders.sio-${tag}`;
  const cross = `orders.sio-cross-${tag}`;

  const options = { transports, upgrade: transports.length > 1 };
  const { sio, cleanup } = await startClient(where, `http://${a.public}`, options);

  const json = nodeClient(`ws://${b.public}/ws`);
  try {
    const fromSio = [];
    await json.subscribe(cross, { message: (m) => fromSio.push(m) }).ready();

    const connected = await sio.call("connect");
    assert.ok(connected.id, `connected ${JSON.stringify(connected)}`);
    const subscribed = await sio.call("subscribe", topic);
    assert.equal(subscribed.ok, true, `subscribe ack ${JSON.stringify(subscribed)}`);
    assert.equal(typeof subscribed.position?.offset, "number", "the ack carries the position");
    assert.equal(await connections(a.admin, "socketio"), 1, "node 1 counts one socketio connection");

    await publishNumbered(json, topic, COUNT);
    await waitFor(async () => (await sio.call("count", topic)) >= COUNT, `${COUNT} messages over ${transportList}`, 60000);
    await sleep(500); // a duplicate would arrive now

    const sent = await sio.call("publish", cross, { n: 1, from: transportList });
    assert.equal(sent.ok, true, `publish ack ${JSON.stringify(sent)}`);
    assert.equal(typeof sent.position?.offset, "number");
    const binary = await sio.call("publish", cross, [0, 1, 2, 255], true);
    assert.equal(binary.ok, true, `binary publish ack ${JSON.stringify(binary)}`);
    await waitFor(() => fromSio.length >= 2, "the Socket.IO client's publications on the JSON client");
    assert.deepEqual(fromSio[0].data, { n: 1, from: transportList });
    assert.equal(fromSio[1].data, Buffer.from([0, 1, 2, 255]).toString("base64"));
    assert.equal(fromSio[1].encoding, "base64");
    assert.equal(fromSio[1].contentType, "application/octet-stream");

    const report = await sio.call("report");
    assertExactlyOnceInOrder(report.numbers[topic], COUNT);
    assert.deepEqual(report.transports, transports, "the transports asked for (an upgrade with both)");
    assert.deepEqual(report.disconnects, [], "never disconnected");
    assert.deepEqual(report.errors, []);
    assert.equal(report.connects.length, 1);
    await sio.call("close");
  } catch (error) {
    await printReport(sio);
    throw error;
  } finally {
    json.disconnect();
    await cleanup();
  }
});
