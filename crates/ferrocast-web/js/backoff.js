/**
 * When to reconnect: exponential backoff with full jitter, the algorithm of
 * docs/client.md and of the Rust SDK (`ferrocast-client`, backoff.rs).
 *
 *     delay = random(0, min(cap, base · 2^attempt))     attempt = 0, 1, 2, …
 *
 * `attempt` counts failures since the last stable connection. Without the
 * randomness every client of a crashed node would come back at the same
 * instants; with it they spread over the whole window.
 * @module
 */

export class Backoff {
  #base;
  #cap;
  #random;
  #attempt = 0;

  /**
   * @param {{ base?: number, cap?: number, random?: () => number }} [options]
   *   `base` and `cap` in milliseconds (500 and 30000); `random` returns a
   *   number in [0, 1) (Math.random; replaceable in tests).
   */
  constructor({ base = 500, cap = 30000, random = Math.random } = {}) {
    if (!(base > 0) || !(cap >= base)) throw new RangeError("backoff: need 0 < base <= cap");
    this.#base = base;
    this.#cap = cap;
    this.#random = random;
  }

  /** Failures counted since the last stable connection. */
  get attempt() {
    return this.#attempt;
  }

  /** The upper bound of the next delay: `min(cap, base · 2^attempt)`. */
  get ceiling() {
    // 2^31 is far above any cap; keeps the power finite.
    return Math.min(this.#cap, this.#base * 2 ** Math.min(this.#attempt, 31));
  }

  /** The delay before the next attempt, in ms; counts one more failure. */
  next() {
    const delay = this.#random() * this.ceiling;
    this.#attempt += 1;
    return delay;
  }

  /** A connection stayed up for `stableAfter`: start again from `base`. */
  reset() {
    this.#attempt = 0;
  }
}

/**
 * The delay after a node drains (close 1012): `random(0, spread)`, not a
 * failure, so the clients of one drained batch do not land on one node in the
 * same millisecond.
 * @param {number} spread milliseconds
 * @param {() => number} [random]
 */
export function drainDelay(spread, random = Math.random) {
  return random() * spread;
}
