// Two tabs in shared mode: one WebSocket connection on the node for both,
// both receive; a tab reloaded while the other keeps the shared subscription
// resumes from its stored position (the worker replays what it missed from
// the history); closing one tab keeps the other's subscriptions.
import assert from "node:assert/strict";

import { assertExactlyOnceInOrder, connections, launchBrowser, nodeClient, nodes, openPage, run, serveStatic, sleep, waitFor } from "./harness.mjs";

run("shared-tabs", async () => {
  const [a] = nodes();
  const site = await serveStatic();
  const browser = await launchBrowser();
  try {
    const context = await browser.newContext();
    // What each tab handed to its application, across reloads.
    const got = { "tab-1": [], "tab-2": [] };
    const gaps = [];
    const subscribe = (tab) =>
      tab.evaluate(async (url) => {
        const client = (window.client = window.ferrocast.createClient(url, { shared: true }));
        window.kind = client.constructor.name;
        const stored = sessionStorage.getItem("chat.shared");
        const sub = client.subscribe("chat.shared", {
          since: stored ? JSON.parse(stored) : null,
          message: (m) => {
            window.deliver(m.data.n);
            sessionStorage.setItem("chat.shared", JSON.stringify(sub.position));
          },
          gap: (g) => window.reportGap(g.message),
        });
        await sub.ready();
      }, `ws://${a.public}/ws`);
    const open = async (label) => {
      const tab = await openPage(context, `${site.origin}/pages/sdk.html`, label);
      await tab.exposeFunction("deliver", (n) => got[label].push(n));
      await tab.exposeFunction("reportGap", (message) => gaps.push(`${label}: ${message}`));
      await subscribe(tab);
      return tab;
    };
    const one = await open("tab-1");
    const two = await open("tab-2");
    assert.equal(await one.evaluate(() => window.kind), "SharedClient");
    await waitFor(async () => (await connections(a.admin, "json")) === 1, "one connection for two tabs", 5000);

    const publisher = nodeClient(`ws://${a.public}/ws`);
    const publish = async (from, to) => {
      for (let n = from; n <= to; n++) await publisher.publish("chat.shared", { n });
    };
    await publish(1, 5);
    await waitFor(() => got["tab-1"].length === 5 && got["tab-2"].length === 5, "5 messages in each tab");
    // Publishing from a tab goes through the worker's connection.
    const position = await two.evaluate(() => window.client.publish("chat.shared", { n: 6 }));
    assert.equal(position.offset, 6);
    await waitFor(() => got["tab-1"].length === 6 && got["tab-2"].length === 6, "the tab's own publication in both tabs");

    // Tab 2 reloads; the worker, kept by tab 1, goes on meanwhile.
    await two.goto("about:blank");
    await publish(7, 9);
    await waitFor(() => got["tab-1"].length === 9, "tab 1 receives while tab 2 is away");
    await two.goto(`${site.origin}/pages/sdk.html`);
    await two.waitForFunction(() => window.sdkReady === true);
    await subscribe(two);
    await publish(10, 11);
    await waitFor(() => got["tab-2"].length >= 11, "tab 2 caught up after its reload");

    await one.close({ runBeforeUnload: true });
    await sleep(500);
    await publish(12, 14);
    await waitFor(() => got["tab-2"].length >= 14, "the remaining tab keeps receiving");
    await sleep(300);
    assertExactlyOnceInOrder(got["tab-2"], 14);
    assertExactlyOnceInOrder(got["tab-1"], 11);
    assert.deepEqual(gaps, []);
    assert.equal(await connections(a.admin, "json"), 2, "the worker's connection and the publisher's");
    publisher.disconnect();
  } finally {
    await browser.close();
    site.close();
  }
});
