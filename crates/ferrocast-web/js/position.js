/**
 * Position tracking for one topic with history (docs/client.md, steps 5–7):
 * remembers the last position handed to the page, drops duplicates, and
 * tells a gap from the next message.
 * @module
 */

/**
 * @typedef {object} StreamPosition
 * @property {string} epoch one incarnation of the topic's history (`""` before its first publication)
 * @property {number} offset 1, 2, 3… within the epoch (0 before the first)
 */

/**
 * Whether `value` is a usable position (say one read back from storage).
 * @param {unknown} value
 * @returns {value is StreamPosition}
 */
export function isPosition(value) {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (/** @type {any} */ (value).epoch) === "string" &&
    Number.isSafeInteger(/** @type {any} */ (value).offset) &&
    /** @type {any} */ (value).offset >= 0
  );
}

export class PositionTracker {
  /** @type {StreamPosition | null} */
  #last = null;
  /** One jump is expected (after `recovered: false`) and is no new gap. */
  #jumpExpected = false;

  /** @param {StreamPosition | null} [start] */
  constructor(start = null) {
    this.#last = start ? { epoch: start.epoch, offset: start.offset } : null;
  }

  /** The position of the last message handed over (or where the subscription started). */
  get last() {
    return this.#last ? { ...this.#last } : null;
  }

  /**
   * The reply to a subscribe: a fresh subscription starts at the history's
   * top; a resume keeps its position, and after `recovered: false` the next
   * position may jump once.
   * @param {{ epoch?: string, offset?: number, recovered?: boolean }} reply
   * @param {boolean} resumed whether the subscribe carried `since`
   */
  subscribed(reply, resumed) {
    if (!resumed && this.#last === null && typeof reply.offset === "number") {
      this.#last = { epoch: reply.epoch ?? "", offset: reply.offset };
    }
    if (resumed && reply.recovered !== true) this.#jumpExpected = true;
  }

  /**
   * Classifies a positioned message and, unless it is a duplicate, moves the
   * position to it.
   * - `"next"`: the one after the last (or the first one seen);
   * - `"duplicate"`: at or before the last in the same epoch: drop it;
   * - `"gap"`: anything else: messages are missing before it.
   * @param {StreamPosition} position
   * @returns {"next" | "duplicate" | "gap"}
   */
  accept(position) {
    const last = this.#last;
    let verdict;
    if (last === null) verdict = "next";
    else if (position.epoch === last.epoch) {
      if (position.offset <= last.offset) return "duplicate";
      verdict = position.offset === last.offset + 1 ? "next" : "gap";
    } else {
      verdict = position.offset === 1 ? "next" : "gap";
    }
    if (verdict === "gap" && this.#jumpExpected) verdict = "next";
    this.#jumpExpected = false;
    this.#last = { epoch: position.epoch, offset: position.offset };
    return verdict;
  }
}
