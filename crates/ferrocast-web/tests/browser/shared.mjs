// Two tabs in shared mode: one WebSocket connection on the node for both,
// both receive, and closing one tab keeps the other's subscriptions.
import assert from "node:assert/strict";

import { connections, launchBrowser, nodeClient, nodes, openPage, run, serveStatic, sleep, waitFor } from "./harness.mjs";

run("shared-tabs", async () => {
  const [a] = nodes();
  const site = await serveStatic();
  const browser = await launchBrowser();
  try {
    const context = await browser.newContext();
    const open = async (label) => {
      const tab = await openPage(context, `${site.origin}/pages/sdk.html`, label);
      await tab.evaluate(async (url) => {
        const client = (window.client = window.ferrocast.createClient(url, { shared: true }));
        window.kind = client.constructor.name;
        window.got = [];
        await client.subscribe("chat.shared", { message: (m) => window.got.push(m.data.n) }).ready();
      }, `ws://${a.public}/ws`);
      return tab;
    };
    const one = await open("tab-1");
    const two = await open("tab-2");
    assert.equal(await one.evaluate(() => window.kind), "SharedClient");
    await waitFor(async () => (await connections(a.admin, "json")) === 1, "one connection for two tabs", 5000);

    const publisher = nodeClient(`ws://${a.public}/ws`);
    for (let n = 1; n <= 5; n++) await publisher.publish("chat.shared", { n });
    for (const tab of [one, two]) {
      await waitFor(() => tab.evaluate(() => window.got.length === 5), "5 messages in each tab");
      assert.deepEqual(await tab.evaluate(() => window.got), [1, 2, 3, 4, 5]);
    }
    // Publishing from a tab goes through the worker's connection.
    const position = await two.evaluate(() => window.client.publish("chat.shared", { n: 6 }));
    assert.equal(position.offset, 6);
    await waitFor(() => one.evaluate(() => window.got.length === 6), "the tab's own publication in the other tab");

    await one.close({ runBeforeUnload: true });
    await sleep(500);
    for (let n = 7; n <= 9; n++) await publisher.publish("chat.shared", { n });
    await waitFor(() => two.evaluate(() => window.got.length === 9), "the remaining tab keeps receiving");
    assert.deepEqual(await two.evaluate(() => window.got), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(await connections(a.admin, "json"), 2, "the worker's connection and the publisher's");
    publisher.disconnect();
  } finally {
    await browser.close();
    site.close();
  }
});
