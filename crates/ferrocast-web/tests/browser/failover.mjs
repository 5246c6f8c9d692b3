// A page behind HAProxy receives 2,000 numbered messages while the node it
// is connected to dies (FAILOVER=kill: SIGKILL) or drains (FAILOVER=drain:
// SIGTERM), and ends with every message exactly once, in order.
// TRANSPORTS=sse runs the same through a proxy that refuses WebSocket
// upgrades (FERROCAST_PROXY), so the page falls back to SSE + HTTP publish.
// At the end the page publishes one more through the proxy and receives it.
import assert from "node:assert/strict";

import {
  assertExactlyOnceInOrder,
  connections,
  launchBrowser,
  nodeClient,
  nodes,
  openPage,
  proxy,
  publishNumbered,
  run,
  serveStatic,
  waitFor,
} from "./harness.mjs";

const COUNT = 2000;
const failover = process.env.FAILOVER ?? "kill";
const fallback = process.env.TRANSPORTS === "sse";
const protocol = fallback ? "sse" : "json";

run(`failover-${failover}${fallback ? "-sse" : ""}`, async () => {
  const all = nodes();
  const site = await serveStatic();
  const browser = await launchBrowser();
  try {
    const page = await openPage(await browser.newContext(), `${site.origin}/pages/sdk.html`, "page");
    await page.evaluate(async (url) => {
      const client = (window.client = new window.ferrocast.Client(url, { backoffBase: 200, backoffCap: 2000 }));
      window.got = [];
      window.gaps = [];
      window.closes = [];
      window.transports = [];
      client.on("connected", (e) => window.transports.push(e.transport));
      client.on("connecting", (e) => e.code !== null && window.closes.push(e.code));
      const sub = client.subscribe("orders.feed", {
        message: (m) => window.got.push(m.data.n),
        gap: (g) => window.gaps.push(g),
      });
      await sub.ready();
    }, `ws://${proxy()}/ws`);
    assert.deepEqual(await page.evaluate(() => window.transports), [fallback ? "sse" : "websocket"]);

    // The node the page landed on (through the proxy), and a publisher on another one.
    const counts = await Promise.all(all.map((n) => connections(n.admin, protocol)));
    const victim = all[counts.indexOf(1)];
    assert.ok(victim && counts.filter((c) => c > 0).length === 1, `one node holds the page: ${counts}`);
    const other = all.find((n) => n !== victim);
    const publisher = nodeClient(`ws://${other.public}/ws`);

    const publishing = publishNumbered(publisher, "orders.feed", COUNT, 2);
    await waitFor(() => page.evaluate(() => window.got.length >= 500), "500 messages before the failover", 30000);
    process.kill(victim.pid, failover === "kill" ? "SIGKILL" : "SIGTERM");
    await publishing;
    await waitFor(() => page.evaluate((n) => window.got.length >= n, COUNT), `all ${COUNT} messages`, 60000);
    // The page publishes too, through the proxy (over the fallback: POST /publish).
    const own = await page.evaluate((n) => window.client.publish("orders.feed", { n }), COUNT + 1);
    assert.equal(own.offset, COUNT + 1, "the page's publication comes after the 2,000");
    await waitFor(() => page.evaluate((n) => window.got.length >= n, COUNT + 1), "the page's own publication");
    // A little longer: a duplicate would arrive now.
    await new Promise((r) => setTimeout(r, 500));
    const result = await page.evaluate(() => ({ got: window.got, gaps: window.gaps, closes: window.closes, transports: window.transports }));
    assertExactlyOnceInOrder(result.got, COUNT + 1);
    assert.deepEqual(result.gaps, [], "no gap: the history covered the failover");
    assert.ok(result.transports.length >= 2, `the page reconnected: ${result.transports}`);
    assert.ok(result.transports.every((t) => t === (fallback ? "sse" : "websocket")), `${result.transports}`);
    if (failover === "drain") assert.ok(result.closes.includes(1012), `drained with 1012: ${result.closes}`);
    console.log(`received ${COUNT} exactly once in order; reconnects ${result.transports.length - 1}; closes ${result.closes}`);
    publisher.disconnect();
  } finally {
    await browser.close();
    site.close();
  }
}, 150000);
