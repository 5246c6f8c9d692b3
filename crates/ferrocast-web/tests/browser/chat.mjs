// The example chat page (crates/ferrocast-web/examples/chat.html), served as
// a static file and loading the SDK from the node (GET /ferrocast.js): two
// people chat through two nodes; a screenshot goes to FERROCAST_ARTIFACTS.
import assert from "node:assert/strict";
import { join } from "node:path";

import { launchBrowser, nodes, run, serveStatic, waitFor } from "./harness.mjs";

run("chat-example", async () => {
  const [a, b] = nodes();
  const site = await serveStatic();
  const browser = await launchBrowser();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const open = async (node, name) => {
      const page = await context.newPage();
      page.on("console", (m) => process.stderr.write(`[${name}] ${m.type()}: ${m.text()}\n`));
      page.on("pageerror", (e) => process.stderr.write(`[${name}] page error: ${e.message}\n`));
      await page.goto(`${site.origin}/examples/chat.html?node=http://${node.public}&room=lobby`);
      await page.waitForFunction(() => window.chatReady === true);
      await waitFor(async () => (await page.textContent("#state")) === "connected", `${name} connected`);
      await page.fill("#name", name);
      return page;
    };
    const ada = await open(a, "Ada");
    const bob = await open(b, "Bob");
    const send = async (page, text) => {
      await page.fill("#text", text);
      await page.press("#text", "Enter");
    };
    await send(ada, "Hello from node A");
    await waitFor(async () => (await bob.locator("#log li").count()) === 1, "Bob sees Ada's message");
    await send(bob, "Hi Ada, this is node B");
    await send(ada, "Both nodes, one room.");
    for (const page of [ada, bob]) {
      await waitFor(async () => (await page.locator("#log li").count()) === 3, "three messages on each page");
      assert.deepEqual(await page.locator("#log li").allTextContents(), [
        "AdaHello from node A",
        "BobHi Ada, this is node B",
        "AdaBoth nodes, one room.",
      ]);
    }
    assert.equal(await ada.inputValue("#text"), "", "the input is cleared after sending");
    const artifacts = process.env.FERROCAST_ARTIFACTS;
    if (artifacts) {
      const file = join(artifacts, "chat.png");
      await bob.screenshot({ path: file });
      console.log(`screenshot: ${file}`);
    }
  } finally {
    await browser.close();
    site.close();
  }
});
