/**
 * A subscription to one topic or pattern: its own state, its position, and
 * the events a page listens to. The client restores it on every new
 * connection, from its position where the topic keeps history.
 * @module
 */

import { Emitter } from "./emitter.js";
import { PositionTracker } from "./position.js";
import { isPattern } from "./frames.js";

/**
 * @typedef {import("./position.js").StreamPosition} StreamPosition
 * @typedef {"subscribing" | "subscribed" | "unsubscribed"} SubscriptionState
 */

/**
 * @typedef {object} Message
 * @property {string} topic the topic it was published to
 * @property {unknown} data the JSON value published (a string for non-JSON payloads, see `encoding`)
 * @property {StreamPosition | null} position where the topic keeps history
 * @property {string} [contentType] set for payloads that are not JSON
 * @property {"base64"} [encoding] set when `data` is base64 of binary bytes
 */

/** Messages held while a subscribe waits for its reply. */
const HELD_LIMIT = 10000;

/**
 * @param {any} object a `message` object of the JSON protocol
 * @returns {Message}
 */
export function toMessage(object) {
  /** @type {Message} */
  const message = {
    topic: object.topic,
    data: object.data,
    position: typeof object.offset === "number" ? { epoch: object.epoch ?? "", offset: object.offset } : null,
  };
  if (object.content_type !== undefined) message.contentType = object.content_type;
  if (object.encoding !== undefined) message.encoding = object.encoding;
  return message;
}

/**
 * What every kind of subscription handle offers (this tab's `Subscription`,
 * and `SharedSubscription` of a shared connection): its filter, a promise of
 * its first confirmation, and the requests on its topic.
 * @extends {Emitter<any>}
 */
export class SubscriptionHandle extends Emitter {
  #filter;
  #client;
  /** @type {{ resolve: () => void, reject: (e: Error) => void, promise: Promise<void> }} */
  #ready;

  /**
   * @param {{ publish: (topic: string, data: unknown) => Promise<StreamPosition | null>, presence: (topic: string) => Promise<any[]>, history: (topic: string, options?: any) => Promise<any>, _release: (sub: any) => void }} client
   * @param {string} filter
   */
  constructor(client, filter) {
    super();
    this.#client = client;
    this.#filter = filter;
    /** @type {any} */
    const settle = {};
    settle.promise = new Promise((resolve, reject) => Object.assign(settle, { resolve, reject }));
    settle.promise.catch(() => {}); // a page that never awaits ready() sees the error event
    this.#ready = settle;
  }

  /** The topic or pattern. */
  get filter() {
    return this.#filter;
  }

  /** Resolves once subscribed; rejects if the node refuses the subscription. */
  ready() {
    return this.#ready.promise;
  }

  /**
   * Publishes to this subscription's topic (not a pattern).
   * @param {unknown} data
   */
  publish(data) {
    return this.#client.publish(this.#filter, data);
  }

  /** Who is subscribed to this topic (namespaces with presence; WebSocket only). */
  presence() {
    return this.#client.presence(this.#filter);
  }

  /**
   * The topic's kept publications (namespaces with history; WebSocket only).
   * @param {{ since?: StreamPosition, limit?: number }} [options]
   */
  history(options) {
    return this.#client.history(this.#filter, options);
  }

  /** Hands the subscription back to its client (which tells the node). */
  _release() {
    this.#client._release(this);
  }

  _resolveReady() {
    this.#ready.resolve();
  }

  /** @param {Error} error */
  _rejectReady(error) {
    this.#ready.reject(error);
  }
}

/**
 * Events: `subscribing`, `subscribed`, `message`, `gap`, `join`, `leave`,
 * `error`, `unsubscribed` (see index.d.ts).
 */
export class Subscription extends SubscriptionHandle {
  /** @type {SubscriptionState} */
  #state = "subscribing";
  #pattern;
  /** @type {PositionTracker} */
  #tracker;
  /** Identifies the latest subscribe sent; replies to older ones are stale. */
  #attempt = 0;
  #resumed = false;
  #waiting = false;
  /** @type {any[]} */
  #held = [];
  #overflowed = false;
  #everSubscribed = false;

  /**
   * @param {ConstructorParameters<typeof SubscriptionHandle>[0]} client
   * @param {string} filter
   * @param {StreamPosition | null} since
   */
  constructor(client, filter, since) {
    super(client, filter);
    this.#pattern = isPattern(filter);
    this.#tracker = new PositionTracker(since);
  }

  /** @returns {SubscriptionState} */
  get state() {
    return this.#state;
  }

  /**
   * The position of the last message handed to the page (or where the
   * subscription started): store it to resume after a reload with
   * `subscribe(topic, { since })`. `null` for a pattern or a topic without history.
   * @returns {StreamPosition | null}
   */
  get position() {
    return this.#pattern ? null : this.#tracker.last;
  }

  /** Ends the subscription, at the node too. */
  unsubscribe() {
    if (this.#state === "unsubscribed") return;
    this._release();
    this._end({ reason: "client", code: null });
  }

  // Called by the client.

  /**
   * A subscribe goes out; returns the attempt's number and the position to
   * resume from (`null`: a fresh subscribe).
   * @returns {{ attempt: number, since: StreamPosition | null }}
   */
  _begin() {
    const since = this.position;
    this.#attempt += 1;
    this.#resumed = since !== null;
    this.#waiting = true;
    return { attempt: this.#attempt, since };
  }

  /**
   * The node confirmed subscribe number `attempt`.
   * @param {number} attempt
   * @param {{ epoch?: string, offset?: number, recovered?: boolean }} reply
   */
  _confirmed(attempt, reply) {
    if (attempt !== this.#attempt || this.#state === "unsubscribed") return;
    this.#waiting = false;
    this.#tracker.subscribed(reply, this.#resumed);
    const wasSubscribed = this.#state === "subscribed";
    const recovered = this.#resumed ? reply.recovered === true : !this.#everSubscribed;
    if (!wasSubscribed) {
      this.#state = "subscribed";
      this.emit("subscribed", { resumed: this.#resumed, recovered, position: this.position });
      this._resolveReady();
    }
    if (!recovered) {
      // Before the messages that follow it, never silently.
      this.emit("gap", {
        reason: "not_recovered",
        recovered: false,
        position: this.position,
        message: this.#resumed
          ? "the history no longer reaches back to this subscription's position"
          : "this subscription cannot resume (a pattern, or a topic without history): messages may be missing",
      });
    }
    this.#everSubscribed = true;
    const held = this.#held;
    this.#held = [];
    if (this.#overflowed) {
      this.#overflowed = false;
      this.emit("gap", { reason: "overflow", recovered: false, position: this.position, message: `more than ${HELD_LIMIT} messages came before the subscription was confirmed` });
    }
    for (const object of held) this.#deliver(object);
  }

  /**
   * The node refused the subscription for good.
   * @param {import("./errors.js").FerrocastError} error
   */
  _refused(error) {
    this.emit("error", { error });
    this._rejectReady(error);
    this._end({ reason: "refused", code: error.code });
  }

  /** The connection ended: the subscription waits for the next one. */
  _lost() {
    this.#waiting = false;
    this.#held = [];
    if (this.#state !== "subscribed") return;
    this.#state = "subscribing";
    this.emit("subscribing", {});
  }

  /**
   * A `message`, `join` or `leave` object for this subscription.
   * @param {any} object
   */
  _incoming(object) {
    if (this.#state === "unsubscribed") return;
    if (object.op === "join" || object.op === "leave") {
      this.emit(object.op, object);
      return;
    }
    if (this.#waiting) {
      // Before the reply: kept, then checked against the position it gives.
      if (this.#held.length < HELD_LIMIT) this.#held.push(object);
      else this.#overflowed = true;
      return;
    }
    this.#deliver(object);
  }

  /** @param {any} object */
  #deliver(object) {
    const message = toMessage(object);
    if (message.position && !this.#pattern) {
      const verdict = this.#tracker.accept(message.position);
      if (verdict === "duplicate") return;
      if (verdict === "gap") {
        this.emit("gap", {
          reason: "skipped",
          recovered: false,
          position: message.position,
          message: "positions jumped: messages before this one are missing",
        });
      }
    }
    this.emit("message", message);
  }

  /**
   * The subscription is over: by the page, refused, or ended by the server.
   * @param {{ reason: "client" | "refused" | "server", code: string | null }} why
   */
  _end(why) {
    if (this.#state === "unsubscribed") return;
    this.#state = "unsubscribed";
    this.#held = [];
    this.emit("unsubscribed", why);
    this._rejectReady(new Error(`subscription to ${this.filter} ended (${why.reason})`));
  }
}
