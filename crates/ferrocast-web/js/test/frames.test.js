import assert from "node:assert/strict";
import { test } from "node:test";

import { SseParser, endpoints, filterMatches, filterProblem, isPattern, splitFrame } from "../frames.js";
import { farewellClose } from "../sse.js";
import { afterClose } from "../session.js";

test("a frame splits on newlines into objects", () => {
  assert.deepEqual(splitFrame('{"op":"pong","id":1}'), [{ op: "pong", id: 1 }]);
  assert.deepEqual(splitFrame('{"a":1}\n{"b":"x\\ny"}\n'), [{ a: 1 }, { b: "x\ny" }]);
  assert.throws(() => splitFrame('{"a":1}\n{oops'), SyntaxError);
});

test("the SSE parser takes chunks cut anywhere", () => {
  const stream =
    'retry: 1700\n\nevent: subscribed\ndata: {"topic":"a"}\nid: E:5,\n\n: ka\n\r\ndata: {"op":"message",\ndata: "x":1}\r\nid: E:6,\r\n\r\n';
  for (const size of [1, 2, 3, 7, stream.length]) {
    const events = [];
    const comments = [];
    const parser = new SseParser((e) => events.push(e), (c) => comments.push(c));
    for (let i = 0; i < stream.length; i += size) parser.feed(stream.slice(i, i + size));
    assert.deepEqual(
      events,
      [
        { type: "subscribed", data: '{"topic":"a"}', id: "E:5," },
        { type: "message", data: '{"op":"message",\n"x":1}', id: "E:6," },
      ],
      `chunks of ${size}`,
    );
    assert.deepEqual(comments, ["ka"]);
  }
});

test("filters match as the node matches them", () => {
  const cases = [
    ["chat.*", "chat.room1", true],
    ["chat.*", "chat", false],
    ["chat.*", "chat.room1.typing", false],
    ["chat.>", "chat.room1", true],
    ["chat.>", "chat.room1.typing", true],
    ["chat.>", "chat", false],
    ["chat.*.typing", "chat.room1.typing", true],
    ["chat.*.typing", "chat.room2.reads", false],
    ["chat.room1", "chat.room1", true],
    ["chat.room1", "chat.room2", false],
  ];
  for (const [filter, topic, expected] of cases) assert.equal(filterMatches(filter, topic), expected, `${filter} ~ ${topic}`);
  assert.ok(isPattern("a.>") && isPattern("a.*.b") && !isPattern("a.b"));
});

test("obvious topic mistakes are caught before a round trip", () => {
  assert.equal(filterProblem("chat.room-1:x@y=z"), null);
  assert.match(filterProblem("chat..a"), /empty token/);
  assert.match(filterProblem("*.a"), /namespace/);
  assert.match(filterProblem("a.>.b"), /last token/);
  assert.match(filterProblem("a.b c"), /characters/);
  assert.match(filterProblem("a.*", { wildcards: false }), /subscriptions/);
  assert.match(filterProblem(""), /non-empty/);
});

test("one node URL gives its three endpoints", () => {
  assert.deepEqual(endpoints("ws://127.0.0.1:8080/ws"), {
    ws: "ws://127.0.0.1:8080/ws",
    sse: "http://127.0.0.1:8080/sse",
    publish: "http://127.0.0.1:8080/publish",
  });
  assert.deepEqual(endpoints("https://rt.example.com/broker/"), {
    ws: "wss://rt.example.com/broker/ws",
    sse: "https://rt.example.com/broker/sse",
    publish: "https://rt.example.com/broker/publish",
  });
  assert.equal(endpoints("/ws", "https://app.example.com/chat/").ws, "wss://app.example.com/ws");
  assert.throws(() => endpoints("ftp://x/ws"), TypeError);
});

test("a close says what to do next", () => {
  const decide = (code, reason = "", refresh = true) => afterClose({ code, reason }, refresh);
  assert.equal(decide(4002), "stop");
  assert.equal(decide(1008, "token expired"), "refresh");
  assert.equal(decide(1008, "token expired", false), "stop");
  assert.equal(decide(1008, "token signature is invalid"), "stop");
  assert.equal(decide(1012), "drain");
  for (const code of [1000, 1006, 1011, 1013, 4000, 4001]) assert.equal(decide(code), "backoff", String(code));
});

test("the end of an SSE stream maps to the close code that means the same", () => {
  assert.equal(farewellClose("node draining; reconnect to another node").code, 1012);
  assert.equal(farewellClose("token expired; reconnect with a new one").code, 1008);
  assert.equal(farewellClose("disconnected by the server; do not reconnect").code, 4002);
  assert.equal(farewellClose("slow consumer: more than 1048576 bytes waiting").code, 4000);
  assert.equal(farewellClose("history unavailable; reconnect to resume").code, 1011);
  assert.equal(farewellClose("").code, 1006);
});
