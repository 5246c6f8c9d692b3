// socket.io-client through HAProxy balancing round-robin with no affinity
// over three nodes (FERROCAST_NODES, FERROCAST_PROXY), on Redis or NATS,
// from Node.js or a Chromium page:
//
//   node haproxy.mjs node|chromium TRANSPORTS      (websocket | polling)
//
// 2,000 numbered messages on a topic whose namespace keeps history, from a
// JSON client on a node that does not hold the socket; after 500 the node
// holding it (its one `socketio` connection) is killed with SIGKILL. The
// client reconnects through the proxy to another node, sending back the
// recovery `pid` and `offset`; that node restores its room and replays what
// was missed: `socket.recovered` is true and the client has all 2,000
// exactly once, in order. Over polling, the session's requests were spread
// over the nodes before the kill (owner routing).
import assert from "node:assert/strict";

import {
  assertExactlyOnceInOrder,
  connections,
  nodeClient,
  nodes,
  proxy,
  publishNumbered,
  run,
  sleep,
  waitFor,
} from "../../../ferrocast-web/tests/browser/harness.mjs";
import { printReport, startClient } from "./clients.mjs";

const COUNT = 2000;
const [where, transportList] = process.argv.slice(2);
assert.ok(["node", "chromium"].includes(where) && transportList, "usage: node haproxy.mjs node|chromium TRANSPORTS");
const transports = transportList.split(",");

/**
 * The node that holds the socket: the only one counting a `socketio`
 * connection.
 * @param {ReturnType<typeof nodes>} all
 */
async function holder(all) {
  const counts = await Promise.all(all.map((n) => connections(n.admin, "socketio")));
  const index = counts.indexOf(1);
  assert.ok(index >= 0 && counts.filter((c) => c > 0).length === 1, `one node holds the socket: ${counts}`);
  return all[index];
}

run(`socket.io-client over ${transportList} in ${where} through round-robin HAProxy, its node killed`, async () => {
  const all = nodes();
  assert.equal(all.length, 3, "three nodes in FERROCAST_NODES");
  const topic = `orders.sio-kill-${transports.join("-")}-${where}-${process.pid}-${Date.now()}`;
  const url = `http://${proxy()}`;
  const options = { transports, upgrade: false };

  const { sio, cleanup } = await startClient(where, url, options);
  let json;
  try {
    await sio.call("connect");
    const subscribed = await sio.call("subscribe", topic);
    assert.equal(subscribed.ok, true, `subscribe ack ${JSON.stringify(subscribed)}`);
    const victim = await holder(all);
    const other = all.find((n) => n !== victim);
    json = nodeClient(`ws://${other.public}/ws`);

    const publishing = publishNumbered(json, topic, COUNT, 2);
    await waitFor(async () => (await sio.call("count", topic)) >= 500, "500 messages before the kill", 30000);
    const before = await sio.call("report");
    assert.deepEqual(before.disconnects, [], "no disconnect before the kill");
    const killedAt = Date.now();
    process.kill(victim.pid, "SIGKILL");
    console.log(`killed ${victim.name} (pid ${victim.pid}), which held the socket`);
    await publishing;
    await waitFor(async () => (await sio.call("count", topic)) >= COUNT, `all ${COUNT} messages`, 60000);
    await sleep(1000); // a duplicate would arrive now

    const report = await sio.call("report");
    assertExactlyOnceInOrder(report.numbers[topic], COUNT);
    assert.ok(report.disconnects.length >= 1, "the client saw its connection end");
    assert.ok(report.connects.length >= 2, `the client connected again: ${report.connects.length} connects`);
    const last = report.connects[report.connects.length - 1];
    assert.equal(last.recovered, true, `socket.recovered after the reconnect: ${JSON.stringify(report.connects)}`);
    assert.equal(report.recovered, true);
    assert.deepEqual(report.transports, transports);
    const now = await holder(all.filter((n) => n !== victim));
    const gone = report.disconnects.map((d) => `"${d.reason}" ${d.at - killedAt} ms after the kill`);
    console.log(`disconnects: ${gone.join("; ")}; recovered on ${now.name}`);
    await sio.call("close");
  } catch (error) {
    await printReport(sio);
    throw error;
  } finally {
    json?.disconnect();
    await cleanup();
  }
}, 110000);
