// The admin UI's pure parts under Node's test runner: the Server-Sent
// Events reader that follows /api/subscribe through fetch().
import assert from "node:assert/strict";
import { test } from "node:test";

import { readEvents, splitEvents } from "../../admin/events.js";

test("complete events are split off, the incomplete rest kept", () => {
  const { events, rest } = splitEvents('event: subscribed\ndata: {"recovered":null}\n\n: keep-alive\n\nevent: publication\ndata: {"a"');
  assert.deepEqual(events, [{ name: "subscribed", data: '{"recovered":null}' }]);
  assert.equal(rest, 'event: publication\ndata: {"a"');
});

test("data lines join with newlines, CRLF counts as LF, unnamed events are messages", () => {
  const { events } = splitEvents("data: one\r\ndata:two\r\n\r\n");
  assert.deepEqual(events, [{ name: "message", data: "one\ntwo" }]);
});

test("events cut anywhere across chunks arrive whole, their data parsed", async () => {
  const text = 'event: publication\ndata: {"topic":"chat.x","data":{"n":1}}\n\nevent: error\ndata: {"error":{"code":"unavailable","message":"draining"}}\n\n';
  const bytes = new TextEncoder().encode(text);
  const body = new ReadableStream({
    start(controller) {
      for (let i = 0; i < bytes.length; i += 7) controller.enqueue(bytes.slice(i, i + 7));
      controller.close();
    },
  });
  const seen = [];
  await readEvents(body, new AbortController().signal, (name, data) => seen.push([name, data]));
  assert.deepEqual(seen, [
    ["publication", { topic: "chat.x", data: { n: 1 } }],
    ["error", { error: { code: "unavailable", message: "draining" } }],
  ]);
});
