// STOMP over SockJS (an HTTP transport) through HAProxy balancing round-robin
// with no affinity over three nodes on Redis (FERROCAST_NODES,
// FERROCAST_PROXY), from Node.js:
//
//   node haproxy.mjs spread|kill TRANSPORT
//
// spread: 1,000 numbered messages from a JSON client on a node that does not
//   own the session arrive exactly once, in order; a SEND with a receipt
//   reaches the JSON client; one node owns the session (its
//   `sockjs_stomp` connection) while every node's
//   `ferrocast_sockjs_requests_total` grew: the session's requests were spread
//   over all three.
// kill: 2,000 numbered messages on a topic whose namespace keeps history;
//   after 500, the owner node is killed (SIGKILL). The client sees its
//   session close, reconnects (a new SockJS session, through the proxy),
//   subscribes again with ferrocast-since from the last message's position,
//   and ends with all 2,000 exactly once, in order.
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
import { nodeStomp, printReport, sockjsRequests, sockjsUrl } from "./clients.mjs";

const [mode, transport] = process.argv.slice(2);
assert.ok(["spread", "kill"].includes(mode) && transport, "usage: node haproxy.mjs spread|kill TRANSPORT");

/**
 * The node that owns the one SockJS session: the only one counting a
 * `sockjs_stomp` connection.
 * @param {ReturnType<typeof nodes>} all
 */
async function owner(all) {
  const counts = await Promise.all(all.map((n) => connections(n.admin, "sockjs_stomp")));
  const index = counts.indexOf(1);
  assert.ok(index >= 0 && counts.filter((c) => c > 0).length === 1, `one node owns the session: ${counts}`);
  return all[index];
}

run(`stompjs over SockJS ${transport} through round-robin HAProxy (${mode})`, async () => {
  const all = nodes();
  assert.equal(all.length, 3, "three nodes in FERROCAST_NODES");
  const tag = `${transport}-${mode}-${process.pid}-${Date.now()}`;
  const topic = `orders.sockjs-${tag}`;
  const stomp = nodeStomp(sockjsUrl(proxy()), transport, { reconnect: mode === "kill" });
  let json;
  try {
    const before = await Promise.all(all.map((n) => sockjsRequests(n.admin)));
    const connected = await stomp.call("connect");
    assert.equal(connected.version, "1.2", `CONNECTED ${JSON.stringify(connected)}`);
    await stomp.call("subscribe", topic);
    const victim = await owner(all);
    const other = all.find((n) => n !== victim);
    json = nodeClient(`ws://${other.public}/ws`);

    if (mode === "spread") {
      const COUNT = 1000;
      const cross = `orders.sockjs-cross-${tag}`;
      const fromStomp = [];
      await json.subscribe(cross, { message: (m) => fromStomp.push(m.data) }).ready();
      await publishNumbered(json, topic, COUNT);
      await waitFor(async () => (await stomp.call("count", topic)) >= COUNT, `${COUNT} messages`, 60000);
      await stomp.call("send", cross, { n: 1, from: transport });
      await waitFor(() => fromStomp.length >= 1, "the STOMP client's SEND on the JSON client");
      await sleep(500); // a duplicate would arrive now
      const report = await stomp.call("report");
      assertExactlyOnceInOrder(report.numbers[topic], COUNT);
      assert.deepEqual(fromStomp, [{ n: 1, from: transport }]);
      assert.deepEqual(report.transports, [transport], "one SockJS session throughout");
      assert.deepEqual(report.closes, []);
      assert.deepEqual(report.errors, []);
      assert.equal(await owner(all), victim, "the session kept its owner");
      const after = await Promise.all(all.map((n) => sockjsRequests(n.admin)));
      const spread = all.map((n, i) => `${n.name}${n === victim ? " (owner)" : ""}: ${after[i] - before[i]}`);
      console.log(`SockJS requests of the session per node: ${spread.join(", ")}`);
      assert.ok(
        after.every((count, i) => count > before[i]),
        `every node served requests of the session: ${spread.join(", ")}`,
      );
    } else {
      const COUNT = 2000;
      const publishing = publishNumbered(json, topic, COUNT, 2);
      await waitFor(async () => (await stomp.call("count", topic)) >= 500, "500 messages before the kill", 30000);
      // Until the kill the session needed no reconnect: one session, no close.
      const beforeKill = await stomp.call("report");
      assert.deepEqual(beforeKill.closes, [], "no close before the kill");
      assert.equal(beforeKill.connects.length, 1, "one session before the kill");
      const killedAt = Date.now();
      process.kill(victim.pid, "SIGKILL");
      console.log(`killed the owner ${victim.name} (pid ${victim.pid})`);
      await publishing;
      await waitFor(async () => (await stomp.call("count", topic)) >= COUNT, `all ${COUNT} messages`, 60000);
      await sleep(1000); // a duplicate would arrive now
      const report = await stomp.call("report");
      assertExactlyOnceInOrder(report.numbers[topic], COUNT);
      assert.ok(report.closes.length >= 1, "the client saw its session close");
      assert.ok(report.connects.length >= 2, `the client connected again: ${report.connects.length} CONNECTED`);
      assert.ok(report.transports.every((t) => t === transport), `${report.transports}`);
      const receipts = report.subscribeReceipts[topic];
      const resumed = receipts.slice(1);
      assert.ok(resumed.length >= 1, "subscribed again after the reconnect");
      for (const r of resumed) {
        assert.ok(r.since, `the new SUBSCRIBE carried ferrocast-since: ${JSON.stringify(r)}`);
        assert.equal(r["ferrocast-recovered"], "true", `the node replayed what was missed: ${JSON.stringify(r)}`);
      }
      const closes = report.closes.map((c) => `${c.code} "${c.reason}" ${c.at - killedAt} ms after the kill`);
      console.log(`closes: ${closes.join("; ")}; resumed with ${resumed.map((r) => r.since).join(", ")}`);
    }
    await stomp.call("close");
  } catch (error) {
    await printReport(stomp);
    throw error;
  } finally {
    json?.disconnect();
  }
}, 100000);
