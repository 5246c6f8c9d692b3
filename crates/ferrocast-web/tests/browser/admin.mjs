// The admin UI (crates/ferrocast-web/admin), served by node a at /ui/,
// against nodes a and b on Redis with an API key. What an operator sees:
// a wrong key refused and the right one let in; both nodes listed, their
// connection counts following test clients; a publication from the UI
// reaching a WebSocket client; a client's publication in the live tail
// within a second; a user's clients on both nodes closed with 4002; the
// configuration without the key; a killed node marked within the API's
// node timeout (6 s). A screenshot of each page at 1280×800 goes to
// FERROCAST_ARTIFACTS.
import assert from "node:assert/strict";
import { join } from "node:path";

import WebSocket from "ws";

import { launchBrowser, mintToken, nodes, run, sleep, waitFor } from "./harness.mjs";

/** The API's node timeout: a node silent this long is gone. */
const NODE_TIMEOUT_MS = 6000;

/**
 * A JSON-protocol WebSocket client of `node`, as `user` (a signed token)
 * or anonymous; keeps what it receives and how it closed.
 * @param {{ public: string }} node
 * @param {string} [user]
 */
async function wsClient(node, user) {
  const headers = user ? { authorization: `Bearer ${mintToken(user, 600)}` } : {};
  const ws = new WebSocket(`ws://${node.public}/ws`, "ferrocast.v1.json", { headers });
  const client = {
    ws,
    /** @type {any[]} */
    received: [],
    /** @type {number | null} */
    closeCode: null,
    nextId: 1,
    /** @param {object} request */
    async request(request) {
      const id = client.nextId++;
      ws.send(JSON.stringify({ ...request, id }));
      const reply = await waitFor(() => client.received.find((m) => m.id === id), `reply to ${JSON.stringify(request)}`, 5000);
      assert.equal(reply.op, "ok", `${JSON.stringify(request)} answered ${JSON.stringify(reply)}`);
      return reply;
    },
  };
  ws.on("message", (frame) => {
    for (const line of String(frame).split("\n")) if (line) client.received.push(JSON.parse(line));
  });
  ws.on("close", (code) => (client.closeCode = code));
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  return client;
}

run(
  "admin-ui",
  async () => {
    const [a, b] = nodes();
    const key = process.env.FERROCAST_API_KEY;
    assert.ok(key, "FERROCAST_API_KEY is not set");
    const artifacts = process.env.FERROCAST_ARTIFACTS;
    const browser = await launchBrowser();
    /** @type {Awaited<ReturnType<typeof wsClient>>[]} */
    const clients = [];
    try {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const page = await context.newPage();
      page.on("console", (m) => process.stderr.write(`[admin] ${m.type()}: ${m.text()}\n`));
      page.on("pageerror", (e) => process.stderr.write(`[admin] page error: ${e.message}\n`));
      /** @param {string} name */
      const screenshot = async (name) => {
        if (!artifacts) return;
        const file = join(artifacts, `admin-${name}.png`);
        await page.evaluate(() => window.scrollTo(0, 0));
        await page.screenshot({ path: file });
        console.log(`screenshot: ${file}`);
      };
      /** @param {string} id */
      const connectionsOf = async (id) => Number((await page.textContent(`#nodes tr[data-node="${id}"] [data-field="connections"]`))?.replace(/,/g, ""));

      // Log in: a wrong key is refused in the API's words, the right one lets in.
      await page.goto(`http://${a.admin}/ui/`);
      await page.waitForFunction(() => /** @type {any} */ (window).adminReady === true);
      assert.equal(await page.isVisible("#login"), true, "the login form shows first");
      await page.getByLabel("API key").fill("not-the-key");
      await page.getByRole("button", { name: "Log in" }).click();
      await waitFor(async () => (await page.textContent("#login-error"))?.includes("wrong API key"), "the wrong key refused");
      await screenshot("login-refused");
      assert.equal(await page.isVisible("#nav"), false);
      await page.getByLabel("API key").fill(key);
      await page.keyboard.press("Enter");
      await waitFor(() => page.isVisible("#cluster"), "the Cluster page after logging in");
      assert.equal(await page.evaluate(() => location.href.includes("key")), false, "the key is not in the URL");

      // Cluster: both nodes, and their connection counts follow test clients.
      for (const node of [a, b]) await waitFor(() => page.isVisible(`#nodes tr[data-node="${node.id}"]`), `node ${node.id} listed`);
      const before = { a: await connectionsOf(a.id), b: await connectionsOf(b.id) };
      clients.push(await wsClient(a), await wsClient(b), await wsClient(b));
      await waitFor(
        async () => (await connectionsOf(a.id)) === before.a + 1 && (await connectionsOf(b.id)) === before.b + 2,
        "connection counts of a +1 and b +2",
        10000,
      );
      const protocols = await page.textContent(`#nodes tr[data-node="${b.id}"]`);
      assert.match(protocols ?? "", /json 2/, "connections by protocol");
      await sleep(2500); // two chart samples
      await screenshot("cluster");

      // Topic: follow chat.admin live; a client's publication shows within a second.
      await page.getByRole("link", { name: "Topic" }).click();
      const subscriber = clients[2];
      await subscriber.request({ op: "subscribe", topic: "chat.admin" });
      await page.getByLabel("Topic or pattern").fill("chat.admin");
      await page.getByRole("button", { name: "Follow" }).click();
      await waitFor(async () => (await page.textContent("#tail-state"))?.startsWith("following"), "the live tail following");
      const sent = Date.now();
      await clients[0].request({ op: "publish", topic: "chat.admin", data: { text: "from a client on node a" } });
      await waitFor(async () => (await page.textContent("#tail"))?.includes("from a client on node a"), "the publication in the live tail", 1000);
      console.log(`live tail: a client's publication shown ${Date.now() - sent} ms after it was sent`);

      // Publishing from the UI reaches a real WebSocket client (on node b).
      await page.getByLabel("Data", { exact: true }).fill('{"text":"from the admin UI"}');
      await page.getByLabel(/Headers/).fill("source: admin");
      await page.getByRole("button", { name: "Publish" }).click();
      const delivered = await waitFor(
        () => subscriber.received.find((m) => m.op === "message" && m.data?.text === "from the admin UI"),
        "the UI's publication at the WebSocket client",
        5000,
      );
      assert.equal(delivered.topic, "chat.admin");
      await waitFor(async () => /Published to chat\.admin at offset \d+/.test((await page.textContent("#publish-result")) ?? ""), "the publish answer");
      // Text, and an error in words.
      await page.getByLabel("Text", { exact: true }).check();
      await page.getByLabel("Data", { exact: true }).fill("plain words");
      await page.getByLabel(/Headers/).fill("");
      await page.getByRole("button", { name: "Publish" }).click();
      await waitFor(async () => (await page.textContent("#tail"))?.includes("plain words"), "the text publication in the tail");
      await page.getByRole("button", { name: "Load history" }).click();
      await waitFor(async () => (await page.textContent("#history-result"))?.includes("3 publication(s)"), "the history");
      await page.getByRole("button", { name: "Who is subscribed" }).click();
      await waitFor(async () => (await page.textContent("#presence-result"))?.includes("1 client(s)"), "the presence");
      await screenshot("topic");
      await page.getByLabel("Topic or pattern").fill("live.x");
      await page.getByRole("button", { name: "Load history" }).click();
      await waitFor(async () => (await page.textContent("#history-result"))?.includes("keeps no history"), "no history in words");

      // Users: mallory on both nodes, looked up, then disconnected with 4002 on both.
      const mallory = [await wsClient(a, "mallory"), await wsClient(b, "mallory")];
      for (const client of mallory) await client.request({ op: "subscribe", topic: "chat.admin" });
      await page.getByRole("link", { name: "Users and connections" }).click();
      await page.getByLabel("User or client id").fill("mallory");
      await page.getByLabel(/Topic \(to look up/).fill("chat.admin");
      await page.getByRole("button", { name: "Look up in the topic's presence" }).click();
      await waitFor(async () => (await page.textContent("#users-result"))?.includes("2 connection(s) of user mallory"), "mallory found twice");
      await page.getByRole("button", { name: /Disconnect/ }).click();
      await waitFor(() => mallory.every((c) => c.closeCode !== null), "mallory's clients closed", 5000);
      assert.deepEqual(mallory.map((c) => c.closeCode), [4002, 4002]);
      const answer = await waitFor(async () => {
        const text = (await page.textContent("#users-result")) ?? "";
        return text.includes("Disconnected") && text;
      }, "the disconnect answer");
      assert.match(answer, /Disconnected 2 connection\(s\) of user mallory/);
      assert.match(answer, /Nodes that answered: a, b\./);
      await screenshot("users");
      await page.getByRole("button", { name: /Disconnect/ }).click();
      await waitFor(async () => (await page.textContent("#users-result"))?.includes("no session of user"), "nothing to disconnect, in words");

      // Config: the namespaces, the options, never the key.
      await page.getByRole("link", { name: "Config" }).click();
      await waitFor(async () => (await page.textContent("#config-toml"))?.includes("backplane = \"redis://"), "the configuration");
      assert.match((await page.textContent("#namespaces")) ?? "", /chat\s*100 per topic/);
      assert.equal((await page.content()).includes(key), false, "the API key is not shown");
      await screenshot("config");

      // A killed node is marked within the API's node timeout, not dropped.
      await page.getByRole("link", { name: "Cluster" }).click();
      process.kill(b.pid, "SIGKILL");
      const killed = Date.now();
      await waitFor(
        async () => (await page.getAttribute(`#nodes tr[data-node="${b.id}"]`, "data-state")) === "down",
        `node ${b.id} marked`,
        NODE_TIMEOUT_MS,
      );
      console.log(`node ${b.id} marked ${Date.now() - killed} ms after kill -9`);
      await sleep(NODE_TIMEOUT_MS + 2500 - (Date.now() - killed));
      assert.equal(await page.getAttribute(`#nodes tr[data-node="${b.id}"]`, "data-state"), "down", "still listed once the API dropped it");
      assert.match((await page.textContent(`#nodes tr[data-node="${b.id}"]`)) ?? "", /not answering, last status/);
      await screenshot("cluster-node-down");
    } finally {
      for (const client of clients) client.ws.terminate();
      await browser.close();
    }
  },
  120000,
);
