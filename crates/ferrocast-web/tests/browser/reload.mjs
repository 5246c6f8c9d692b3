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
    // The page keeps what it handed to its application next to the
    // position, both in sessionStorage, as an application keeps its state
    // and the position it reflects: a reload cannot separate them.
    const start = (url) =>
      page.evaluate(async (url) => {
        const stored = sessionStorage.getItem("orders.feed");
        const log = JSON.parse(sessionStorage.getItem("log") ?? "[]");
        const gaps = JSON.parse(sessionStorage.getItem("gaps") ?? "[]");
        const client = (window.client = new window.ferrocast.Client(url));
        const sub = client.subscribe("orders.feed", {
          since: stored ? JSON.parse(stored) : null,
          message: (m) => {
            log.push(m.data.n);
            sessionStorage.setItem("log", JSON.stringify(log));
            sessionStorage.setItem("orders.feed", JSON.stringify(sub.position));
          },
          gap: (g) => {
            gaps.push(g.reason);
            sessionStorage.setItem("gaps", JSON.stringify(gaps));
          },
        });
        await sub.ready();
        return stored;
      }, url);
    const delivered = () => page.evaluate(() => JSON.parse(sessionStorage.getItem("log") ?? "[]"));
    assert.equal(await start(`ws://${a.public}/ws`), null);

    const publisher = nodeClient(`ws://${b.public}/ws`);
    const publishing = publishNumbered(publisher, "orders.feed", COUNT, 5);
    await waitFor(async () => (await delivered()).length >= 200, "200 messages before the reload");
    await page.reload();
    await page.waitForFunction(() => window.sdkReady === true);
    const resumedFrom = JSON.parse(await start(`ws://${a.public}/ws`));
    assert.ok(resumedFrom.offset >= 200, `resumed from the stored position ${JSON.stringify(resumedFrom)}`);
    await publishing;
    await waitFor(async () => (await delivered()).length >= COUNT, `all ${COUNT}`, 30000);
    await new Promise((r) => setTimeout(r, 300));
    assertExactlyOnceInOrder(await delivered(), COUNT);
    assert.deepEqual(await page.evaluate(() => sessionStorage.getItem("gaps")), null, "no gap");
    publisher.disconnect();
  } finally {
    await browser.close();
    site.close();
  }
});
