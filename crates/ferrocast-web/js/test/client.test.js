// The client's reactions, against a scripted WebSocket (no node): what it
// sends, when it reconnects, what the page sees. The real thing runs in
// Chromium against real nodes (crates/ferrocast-web/tests/browser.rs).
import assert from "node:assert/strict";
import { test } from "node:test";

import { Client } from "../client.js";

/** A WebSocket whose server side the test plays. */
class ScriptedSocket {
  static all = /** @type {ScriptedSocket[]} */ ([]);
  /** How many sockets the test has accepted. */
  static opened = 0;
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.readyState = 0;
    this.sent = /** @type {any[]} */ ([]);
    this.closedWith = null;
    ScriptedSocket.all.push(this);
  }
  send(text) {
    for (const line of text.split("\n")) this.sent.push(JSON.parse(line));
  }
  close(code = 1000) {
    this.closedWith ??= code;
    this.readyState = 3;
  }
  // The server's side.
  accept() {
    this.readyState = 1;
    this.onopen?.();
  }
  refuse() {
    this.readyState = 3;
    this.onclose?.({ code: 1006, reason: "" });
  }
  deliver(...objects) {
    this.onmessage?.({ data: objects.map((o) => JSON.stringify(o)).join("\n") });
  }
  reply(op, fields = {}) {
    const request = this.sent.findLast((r) => r.op === op);
    assert.ok(request, `no ${op} was sent`);
    this.deliver({ op: "ok", id: request.id, ...fields });
  }
  end(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));
const latest = () => ScriptedSocket.all.at(-1);

/** Waits (at most 5 s) until `condition()` holds: timers may run late on a busy machine. */
async function until(condition, what) {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await tick(5);
  }
}

/** Lets the client open its next socket (the `n`th, 1-based), which the server accepts. */
async function accept(n = ScriptedSocket.opened + 1) {
  await until(() => ScriptedSocket.all.length >= n, `socket ${n}`);
  ScriptedSocket.opened = n;
  ScriptedSocket.all[n - 1].accept();
  await tick();
}

function client(urls, options = {}) {
  ScriptedSocket.all = [];
  ScriptedSocket.opened = 0;
  return new Client(urls, { WebSocket: ScriptedSocket, transports: ["websocket"], backoffBase: 20, backoffCap: 40, drainSpread: 20, ...options });
}

test("resubscribes from the last position after a loss and drops the replay's duplicates", { timeout: 20000 }, async () => {
  const c = client(["ws://a/ws", "ws://b/ws"]);
  const got = [];
  const gaps = [];
  const sub = c.subscribe("orders.eu", { message: (m) => got.push(m.data), gap: (g) => gaps.push(g.reason) });
  await accept();
  assert.deepEqual(latest().sent.at(-1), { op: "subscribe", topic: "orders.eu", id: 1 });
  latest().reply("subscribe", { epoch: "E", offset: 4 });
  await tick();
  latest().deliver({ op: "message", topic: "orders.eu", data: 5, epoch: "E", offset: 5 });
  await sub.ready();
  latest().end(1006);
  await accept(2);
  // The next URL, resuming after offset 5.
  assert.equal(latest().url, "ws://b/ws");
  assert.deepEqual(latest().sent.at(-1), { op: "subscribe", topic: "orders.eu", since: { epoch: "E", offset: 5 }, id: 1 });
  latest().reply("subscribe", { epoch: "E", offset: 7, recovered: true });
  await tick();
  latest().deliver(
    { op: "message", topic: "orders.eu", data: 5, epoch: "E", offset: 5 },
    { op: "message", topic: "orders.eu", data: 6, epoch: "E", offset: 6 },
    { op: "message", topic: "orders.eu", data: 7, epoch: "E", offset: 7 },
  );
  await tick();
  assert.deepEqual(got, [5, 6, 7]);
  assert.deepEqual(gaps, []);
  assert.deepEqual(sub.position, { epoch: "E", offset: 7 });
  c.disconnect();
});

test("recovered:false and a jump in positions are gaps, before the messages after them", { timeout: 20000 }, async () => {
  const c = client("ws://a/ws");
  const seen = [];
  c.subscribe("orders.eu", { since: { epoch: "E", offset: 3 }, message: (m) => seen.push(m.data), gap: (g) => seen.push(g.reason) });
  await accept();
  latest().reply("subscribe", { epoch: "E", offset: 90, recovered: false });
  await tick();
  latest().deliver(
    { op: "message", topic: "orders.eu", data: 50, epoch: "E", offset: 50 },
    { op: "message", topic: "orders.eu", data: 51, epoch: "E", offset: 51 },
    { op: "message", topic: "orders.eu", data: 60, epoch: "E", offset: 60 },
  );
  assert.deepEqual(seen, ["not_recovered", 50, 51, "skipped", 60]);
  c.disconnect();
});

test("messages that come before the reply are held and checked against it", { timeout: 20000 }, async () => {
  const c = client("ws://a/ws");
  const got = [];
  c.subscribe("orders.eu", { message: (m) => got.push(m.data) });
  await accept();
  latest().deliver(
    { op: "message", topic: "orders.eu", data: 4, epoch: "E", offset: 4 },
    { op: "message", topic: "orders.eu", data: 5, epoch: "E", offset: 5 },
  );
  assert.deepEqual(got, []);
  latest().reply("subscribe", { epoch: "E", offset: 4 });
  await tick();
  assert.deepEqual(got, [5]);
  c.disconnect();
});

test("1012 reconnects within the drain spread without counting a failure; 4002 stops", { timeout: 20000 }, async () => {
  const c = client("ws://a/ws", { backoffBase: 5000, backoffCap: 5000 });
  const states = [];
  c.on("state", (e) => states.push(e.state));
  await accept();
  const drained = Date.now();
  latest().end(1012, "node draining; reconnect to another node");
  await accept(2);
  assert.ok(Date.now() - drained < 2500, "reconnected within drainSpread, not after the 5 s backoff");
  const events = [];
  c.on("disconnected", (e) => events.push(e.code));
  c.on("error", (e) => events.push(e.error.code));
  latest().end(4002, "disconnected by the server; do not reconnect");
  await tick(100);
  assert.deepEqual(events, [4002, "disconnected"]);
  assert.equal(c.state, "disconnected");
  assert.equal(ScriptedSocket.all.length, 2, "no reconnect after 4002");
  assert.deepEqual(states, ["connected", "connecting", "connected", "disconnected"]);
});

test("an expired token is replaced by getToken() at once; a refused one stops the client", { timeout: 20000 }, async () => {
  let issued = 0;
  const c = client("ws://a/ws", { getToken: async () => `t${++issued}` });
  await accept();
  assert.deepEqual(latest().sent[0], { op: "auth", token: "t1", id: 1 });
  latest().reply("auth");
  await tick();
  await tick();
  assert.equal(c.state, "connected");
  latest().end(1008, "no valid token in time, or it expired");
  await accept(2);
  assert.deepEqual(latest().sent[0], { op: "auth", token: "t2", id: 1 });
  const errors = [];
  c.on("error", (e) => errors.push(e.error.code));
  // Refused before the connection was usable: no reconnect loop.
  latest().deliver({ op: "error", id: 1, code: "unauthorized", message: "token signature is invalid" });
  latest().end(1008, "token signature is invalid");
  await tick(100);
  assert.equal(c.state, "disconnected");
  assert.deepEqual(errors, ["unauthorized"]);
});

test("a silent connection gets a ping, then is dropped and replaced", { timeout: 20000 }, async () => {
  const c = client("ws://a/ws", { idleTimeout: 1000 });
  await accept();
  const first = latest();
  await until(() => first.sent.at(-1)?.op === "ping", "a ping after half the idle timeout");
  await until(() => first.closedWith === 4001, "the silent connection dropped");
  await until(() => ScriptedSocket.all.length === 2, "a new connection");
  c.disconnect();
});

test("a publish answered before the loss resolves; one in flight is connection_lost, never resent", { timeout: 20000 }, async () => {
  const c = client("ws://a/ws");
  await accept();
  const done = c.publish("chat.a", { text: "hi" });
  await tick();
  latest().reply("publish", { epoch: "E", offset: 9 });
  await tick();
  assert.deepEqual(await done, { epoch: "E", offset: 9 });
  const lost = c.publish("chat.a", 2);
  await tick();
  const socket = latest();
  socket.end(1006);
  await assert.rejects(lost, (e) => e.code === "connection_lost");
  await accept(2);
  assert.equal(latest().sent.filter((r) => r.op === "publish").length, 0, "not resent");
  await assert.rejects(c.publish("chat.*", 1), (e) => e.code === "bad_request");
  c.disconnect();
  await assert.rejects(c.publish("chat.a", 1), (e) => e.code === "disconnected");
});

test("a publication reaches every subscription that matches it; server unsubscribe ends one", { timeout: 20000 }, async () => {
  const c = client("ws://a/ws");
  const got = [];
  const exact = c.subscribe("chat.a", { message: (m) => got.push(`exact ${m.data}`) });
  c.subscribe("chat.*", { message: (m) => got.push(`pattern ${m.topic}`) });
  await accept();
  for (const r of latest().sent) latest().deliver({ op: "ok", id: r.id });
  await tick();
  latest().deliver({ op: "message", topic: "chat.a", data: 1 }, { op: "message", topic: "chat.b", data: 2 });
  assert.deepEqual(got, ["exact 1", "pattern chat.a", "pattern chat.b"]);
  const ended = [];
  exact.on("unsubscribed", (e) => ended.push(e.reason));
  latest().deliver({ op: "unsubscribed", topic: "chat.a" });
  assert.deepEqual(ended, ["server"]);
  assert.equal(exact.state, "unsubscribed");
  assert.equal(c.getSubscription("chat.a"), null);
  assert.throws(() => c.subscribe("chat.*"), (e) => e.code === "subscription_exists");
  c.disconnect();
});
