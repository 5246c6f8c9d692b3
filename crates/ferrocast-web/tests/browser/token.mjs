// Tokens that expire during the connection: the node closes with 1008
// ("token expired"), the page's getToken() is called again, and the page
// keeps receiving without a gap (it resumes from its position).
import assert from "node:assert/strict";

import { assertExactlyOnceInOrder, launchBrowser, mintToken, nodeClient, nodes, openPage, publishNumbered, run, serveStatic, waitFor } from "./harness.mjs";

const COUNT = 400;
const TOKEN_LIFETIME = 3; // seconds

run("token-refresh", async () => {
  const [a, b] = nodes();
  const site = await serveStatic();
  const browser = await launchBrowser();
  try {
    const page = await openPage(await browser.newContext(), `${site.origin}/pages/sdk.html`, "page");
    let issued = 0;
    // The page's getToken() asks "its backend" (this script) for a token.
    await page.exposeFunction("fetchToken", () => {
      issued += 1;
      return mintToken("alice", TOKEN_LIFETIME);
    });
    await page.evaluate(async (url) => {
      const client = (window.client = new window.ferrocast.Client(url, { getToken: () => window.fetchToken() }));
      window.got = [];
      window.gaps = [];
      window.closes = [];
      window.errors = [];
      client.on("connecting", (e) => e.code !== null && window.closes.push(`${e.code} ${e.reason}`));
      client.on("error", (e) => window.errors.push(e.error.message));
      await client.subscribe("orders.feed", { message: (m) => window.got.push(m.data.n), gap: (g) => window.gaps.push(g) }).ready();
    }, `ws://${a.public}/ws`);

    // The publisher, a backend on the other node, with a token of its own.
    const publisher = nodeClient(`ws://${b.public}/ws`, { getToken: () => mintToken("backend", 60) });
    await publishNumbered(publisher, "orders.feed", COUNT, 20); // about 8 s: two or three expiries
    await waitFor(() => page.evaluate((n) => window.got.length >= n, COUNT), `all ${COUNT} messages`, 30000);
    const result = await page.evaluate(() => ({ got: window.got, gaps: window.gaps, closes: window.closes, errors: window.errors, state: window.client.state }));
    assertExactlyOnceInOrder(result.got, COUNT);
    assert.deepEqual(result.gaps, [], "no gap across token refreshes");
    assert.deepEqual(result.errors, []);
    const expiries = result.closes.filter((c) => c.startsWith("1008") && c.includes("expired"));
    assert.ok(expiries.length >= 2, `the token expired during the run: ${result.closes}`);
    assert.ok(issued >= expiries.length + 1, `getToken() was called again after each expiry (${issued} tokens, ${expiries.length} expiries)`);
    assert.equal(result.state, "connected");

    // A backend disconnects the user (server API, 4002): the page stops, no reconnect.
    await page.evaluate(() => {
      window.stopped = new Promise((resolve) => window.client.once("disconnected", resolve));
    });
    const answer = await fetch(`http://${a.admin}/api/disconnect`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: "alice" }),
    });
    assert.equal(answer.status, 200, await answer.text());
    const disconnected = await page.evaluate(() => window.stopped);
    assert.equal(disconnected.code, 4002);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(await page.evaluate(() => window.client.state), "disconnected", "no reconnect after 4002");

    // A token the node does not accept: the page stops and says why, no reconnect loop.
    const refused = await page.evaluate(async (url) => {
      const client = new window.ferrocast.Client(url, { token: "not.a.token" });
      const events = [];
      client.on("error", (e) => events.push(`error ${e.error.code}`));
      client.on("disconnected", (e) => events.push(`disconnected ${e.code}`));
      await new Promise((resolve) => client.on("disconnected", resolve));
      await new Promise((resolve) => setTimeout(resolve, 1500));
      return { events, state: client.state };
    }, `ws://${a.public}/ws`);
    assert.equal(refused.state, "disconnected");
    assert.deepEqual(refused.events, ["disconnected 1008", "error unauthorized"]);
    publisher.disconnect();
  } finally {
    await browser.close();
    site.close();
  }
});
