// A page stores its subscription's position in sessionStorage; reloaded in
// the middle of a stream, it resumes from there without loss or duplicate.
import assert from "node:assert/strict";

import { assertExactlyOnceInOrder, launchBrowser, nodeClient, nodes, openPage, publishNumbered, run, serveStatic, waitFor } from "./harness.mjs";

const COUNT = 600;

run("reload", async () => {
  const [a, b] = nodes();
  const site = await serveStatic();
  const browser = await launchBrowser();
  try {
    const page = await openPage(await browser.newContext(), `${site.origin}/pages/sdk.html`, "page");
    // What the page handed to its application, across reloads.
    const delivered = [];
    const gaps = [];
    await page.exposeFunction("deliver", (n) => delivered.push(n));
    await page.exposeFunction("reportGap", (reason) => gaps.push(reason));
    const start = (url) =>
      page.evaluate(async (url) => {
        const stored = sessionStorage.getItem("orders.feed");
        const client = (window.client = new window.ferrocast.Client(url));
        const sub = client.subscribe("orders.feed", {
          since: stored ? JSON.parse(stored) : null,
          message: (m) => {
            window.deliver(m.data.n);
            sessionStorage.setItem("orders.feed", JSON.stringify(sub.position));
          },
          gap: (g) => window.reportGap(g.reason),
        });
        await sub.ready();
        return stored;
      }, url);
    assert.equal(await start(`ws://${a.public}/ws`), null);

    const publisher = nodeClient(`ws://${b.public}/ws`);
    const publishing = publishNumbered(publisher, "orders.feed", COUNT, 5);
    await waitFor(() => delivered.length >= 200, "200 messages before the reload");
    await page.reload();
    await page.waitForFunction(() => window.sdkReady === true);
    const resumedFrom = JSON.parse(await start(`ws://${a.public}/ws`));
    assert.ok(resumedFrom.offset >= 200, `resumed from the stored position ${JSON.stringify(resumedFrom)}`);
    await publishing;
    await waitFor(() => delivered.length >= COUNT, `all ${COUNT}`, 30000);
    await new Promise((r) => setTimeout(r, 300));
    assertExactlyOnceInOrder(delivered, COUNT);
    assert.deepEqual(gaps, []);
    publisher.disconnect();
  } finally {
    await browser.close();
    site.close();
  }
});
