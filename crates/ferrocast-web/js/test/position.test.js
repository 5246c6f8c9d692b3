import assert from "node:assert/strict";
import { test } from "node:test";

import { PositionTracker, isPosition } from "../position.js";

const at = (epoch, offset) => ({ epoch, offset });

test("a fresh subscription starts at the top its reply names", () => {
  const tracker = new PositionTracker();
  tracker.subscribed({ epoch: "E", offset: 41 }, false);
  assert.deepEqual(tracker.last, at("E", 41));
  assert.equal(tracker.accept(at("E", 42)), "next");
  assert.equal(tracker.accept(at("E", 43)), "next");
  assert.deepEqual(tracker.last, at("E", 43));
});

test("duplicates are dropped and leave the position alone", () => {
  const tracker = new PositionTracker(at("E", 10));
  assert.equal(tracker.accept(at("E", 9)), "duplicate");
  assert.equal(tracker.accept(at("E", 10)), "duplicate");
  assert.deepEqual(tracker.last, at("E", 10));
});

test("a jump is a gap, and the position moves past it", () => {
  const tracker = new PositionTracker(at("E", 10));
  assert.equal(tracker.accept(at("E", 13)), "gap");
  assert.equal(tracker.accept(at("E", 14)), "next");
});

test("a new epoch continues at offset 1; anything else in it is a gap", () => {
  const tracker = new PositionTracker(at("E", 10));
  assert.equal(tracker.accept(at("F", 1)), "next");
  const other = new PositionTracker(at("E", 10));
  assert.equal(other.accept(at("F", 5)), "gap");
  // The empty epoch of a topic never published to.
  const empty = new PositionTracker();
  empty.subscribed({ epoch: "", offset: 0 }, false);
  assert.equal(empty.accept(at("E", 1)), "next");
});

test("after recovered:false the next position may jump once without a new gap", () => {
  const tracker = new PositionTracker(at("E", 10));
  tracker.subscribed({ epoch: "E", offset: 90, recovered: false }, true);
  assert.equal(tracker.accept(at("E", 50)), "next");
  assert.equal(tracker.accept(at("E", 52)), "gap");
  // recovered:true expects no jump.
  const resumed = new PositionTracker(at("E", 10));
  resumed.subscribed({ epoch: "E", offset: 90, recovered: true }, true);
  assert.equal(resumed.accept(at("E", 12)), "gap");
});

test("a resume keeps its own position, not the reply's top", () => {
  const tracker = new PositionTracker(at("E", 10));
  tracker.subscribed({ epoch: "E", offset: 90, recovered: true }, true);
  assert.deepEqual(tracker.last, at("E", 10));
});

test("positions read back from storage are checked", () => {
  assert.ok(isPosition({ epoch: "E", offset: 0 }));
  for (const bad of [null, "E:1", { epoch: 1, offset: 1 }, { epoch: "E", offset: -1 }, { epoch: "E", offset: 1.5 }]) {
    assert.equal(isPosition(bad), false, JSON.stringify(bad));
  }
});
