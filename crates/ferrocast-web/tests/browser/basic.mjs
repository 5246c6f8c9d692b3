// A page subscribes, another page publishes (each on its own node of a
// 2-node Redis cluster): a topic with history, a wildcard, unsubscribe,
// presence, history, and errors a page sees in words.
import assert from "node:assert/strict";

import { launchBrowser, nodes, openPage, run, serveStatic, sleep, waitFor } from "./harness.mjs";

run("basic", async () => {
  const [a, b] = nodes();
  const site = await serveStatic();
  const browser = await launchBrowser();
  try {
    const context = await browser.newContext();
    const reader = await openPage(context, `${site.origin}/pages/sdk.html`, "reader");
    const writer = await openPage(context, `${site.origin}/pages/sdk.html`, "writer");

    await reader.evaluate(async (url) => {
      const { Client } = window.ferrocast;
      const client = (window.client = new Client(url));
      window.seen = { chat: [], news: [], gaps: [], joins: [], errors: [] };
      const chat = (window.chat = client.subscribe("chat.room1", {
        message: (m) => window.seen.chat.push({ n: m.data.n, offset: m.position?.offset }),
        gap: (g) => window.seen.gaps.push(g.reason),
      }));
      const news = client.subscribe("news.*", { message: (m) => window.seen.news.push(`${m.topic}:${m.data}`) });
      const lobby = client.subscribe("room.lobby", { join: (j) => window.seen.joins.push(j.client) });
      const forbidden = client.subscribe("_ctl.x", { error: ({ error }) => window.seen.errors.push(error.code) });
      await Promise.all([chat.ready(), news.ready(), lobby.ready()]);
      await forbidden.ready().catch(() => {});
      return { state: client.state, transport: client.transport };
    }, `ws://${a.public}/ws`).then((s) => assert.deepEqual(s, { state: "connected", transport: "websocket" }));

    const published = await writer.evaluate(async (url) => {
      const client = (window.client = new window.ferrocast.Client([url]));
      const positions = [];
      for (let n = 1; n <= 10; n++) positions.push(await client.publish("chat.room1", { n }));
      await client.publish("news.eu", "storm");
      await client.publish("news.us", "sun");
      let invalid;
      try {
        await client.publish("chat.*", 1);
      } catch (error) {
        invalid = `${error.code}`;
      }
      return { positions, invalid };
    }, `ws://${b.public}/ws`);
    assert.equal(published.invalid, "bad_request");
    assert.deepEqual(
      published.positions.map((p) => p.offset),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
      "a publish resolves with its position",
    );

    await waitFor(() => reader.evaluate(() => window.seen.chat.length === 10 && window.seen.news.length === 2), "10 chat + 2 news on the reader");
    const seen = await reader.evaluate(() => window.seen);
    assert.deepEqual(seen.chat.map((m) => m.n), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(seen.chat.map((m) => m.offset), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(seen.news.sort(), ["news.eu:storm", "news.us:sun"]);
    assert.deepEqual(seen.gaps, []);
    assert.deepEqual(seen.errors, ["forbidden"], "a subscription the node refuses says why");
    assert.equal(seen.joins.length, 1, "the reader's own join");
    assert.deepEqual(await reader.evaluate(() => window.chat.position), { epoch: await reader.evaluate(() => window.chat.position.epoch), offset: 10 });

    // Presence, from the other node.
    const present = await writer.evaluate(() => window.client.presence("room.lobby"));
    assert.deepEqual(present.map((p) => p.client), seen.joins);

    // A backend ends the reader's room subscription (server API Unsubscribe).
    await reader.evaluate(() => {
      window.ended = new Promise((resolve) => window.client.getSubscription("room.lobby").once("unsubscribed", resolve));
    });
    const answer = await fetch(`http://${a.admin}/api/unsubscribe`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ client: seen.joins[0], topic: "room.lobby" }),
    });
    assert.equal(answer.status, 200, await answer.text());
    assert.deepEqual(await reader.evaluate(() => window.ended), { reason: "server", code: "unsubscribed" });
    assert.equal(await reader.evaluate(() => window.client.getSubscription("room.lobby")), null);

    // Unsubscribe: nothing more arrives for it, the pattern goes on.
    await reader.evaluate(() => window.chat.unsubscribe());
    assert.equal(await reader.evaluate(() => window.chat.state), "unsubscribed");
    await sleep(300);
    await writer.evaluate(async () => {
      for (let n = 11; n <= 15; n++) await window.client.publish("chat.room1", { n });
      await window.client.publish("news.eu", "marker");
    });
    await waitFor(() => reader.evaluate(() => window.seen.news.length === 3), "the marker on news.*");
    assert.equal(await reader.evaluate(() => window.seen.chat.length), 10, "nothing after unsubscribe");

    if (process.env.FERROCAST_HISTORY === "1") {
      const page = await writer.evaluate(() => window.client.history("chat.room1", { limit: 5 }));
      assert.deepEqual(page.publications.map((p) => p.data.n), [11, 12, 13, 14, 15], "the newest 5");
      assert.equal(page.position.offset, 15);
    }
  } finally {
    await browser.close();
    site.close();
  }
});
