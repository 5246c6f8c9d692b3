import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, drainDelay } from "../backoff.js";

test("the ceiling doubles from base up to cap, and reset starts over", () => {
  const backoff = new Backoff({ base: 500, cap: 30000, random: () => 0.999999 });
  const ceilings = [];
  for (let i = 0; i < 9; i++) {
    ceilings.push(backoff.ceiling);
    backoff.next();
  }
  assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  backoff.reset();
  assert.equal(backoff.attempt, 0);
  assert.equal(backoff.ceiling, 500);
});

test("full jitter: delays spread uniformly over [0, ceiling]", () => {
  const backoff = new Backoff({ base: 1000, cap: 1000 });
  const buckets = new Array(10).fill(0);
  const runs = 20000;
  for (let i = 0; i < runs; i++) {
    const delay = backoff.next();
    assert.ok(delay >= 0 && delay < 1000, `delay ${delay} out of [0, 1000)`);
    buckets[Math.floor(delay / 100)] += 1;
  }
  // Each tenth of the window gets about a tenth of the delays (not bunched
  // at the top as with "equal jitter").
  for (const count of buckets) assert.ok(Math.abs(count - runs / 10) < runs / 40, `buckets ${buckets}`);
});

test("the exponent cannot overflow after many failures", () => {
  const backoff = new Backoff({ base: 500, cap: 30000, random: () => 0.5 });
  for (let i = 0; i < 5000; i++) backoff.next();
  assert.equal(backoff.next(), 15000);
});

test("a drain delay is random(0, spread) and counts no failure", () => {
  assert.equal(drainDelay(1000, () => 0.25), 250);
  assert.throws(() => new Backoff({ base: 0 }), RangeError);
});
